"""One bounce policy for every kind of mail: a digest's 5xx and a confirmation's 5xx count
the same, suppress at the same threshold, and a 4xx counts nothing for either."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import fakeredis
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from papermail.config import Settings
from papermail.delivery.base import (
    BackendUnavailable,
    DeliveryError,
    PermanentError,
    TransientError,
)
from papermail.delivery.memory import MemoryBackend
from papermail.models import EditionKind, Subscriber, SubscriberStatus
from papermail.pipeline.editions import build_edition
from papermail.pipeline.ingest import ingest_papers
from papermail.pipeline.outcomes import Outcome, classify
from papermail.pipeline.planning import plan_edition
from papermail.pipeline.ratelimit import Unlimited
from papermail.pipeline.rendering import EditionStore, make_environment
from papermail.pipeline.sending import SendPolicy, send_batch
from papermail.pipeline.variants import Identity, TemplateSource
from papermail.sources.hf import load_sample
from papermail.subscribers import confirmations
from papermail.subscribers.bounces import BouncePolicy
from papermail.subscribers.tokens import Links
from tests.conftest import FIXED_NOW

T0 = dt.datetime(2026, 11, 27, 7, 0, tzinfo=dt.UTC)
THRESHOLD = 3
BOUNCE = PermanentError("550 5.1.1 no such user", code=550)
LATER = TransientError("451 4.7.1 try again later", code=451)

# Sends one message of a kind to a subscriber through a backend; True if it left.
SendKind = Callable[[Subscriber, MemoryBackend], bool]


def _identity(settings: Settings) -> Identity:
    return Identity(
        mail_from=settings.mail_from,
        envelope_from=settings.sender_address,
        domain=settings.mail_domain,
        list_name=settings.list_name,
    )


@pytest.fixture(params=["digest", "confirmation"])
def kind(
    request: pytest.FixtureRequest, session: Session, links: Links, settings: Settings
) -> tuple[SubscriberStatus, SendKind]:
    """The status a subscriber has when this kind of mail goes out, and how to send it."""
    env = make_environment(settings.templates_dir)
    if request.param == "confirmation":

        def confirmation(subscriber: Subscriber, backend: MemoryBackend) -> bool:
            sent = confirmations.send_confirmation(
                session,
                subscriber_id=subscriber.id,
                env=env,
                links=links,
                identity=_identity(settings),
                backend=backend,
                now=T0,
                bounce_threshold=THRESHOLD,
            )
            session.commit()
            return sent

        return SubscriberStatus.PENDING, confirmation

    ingest_papers(session, result=load_sample(), now=FIXED_NOW)
    edition = build_edition(session, day=T0.date(), kind=EditionKind.DAILY, size=20).edition
    assert edition is not None
    session.commit()

    def digest(subscriber: Subscriber, backend: MemoryBackend) -> bool:
        ids: list[int] = []
        plan_edition(
            session, edition=edition, now=T0, batch_size=100, publish=ids.extend, due_only=False
        )
        report = send_batch(
            session,
            delivery_ids=ids,
            backend=backend,
            templates=TemplateSource(
                store=EditionStore(fakeredis.FakeRedis(), ttl_seconds=60),
                env=env,
                links=links,
                identity=_identity(settings),
            ),
            limiter=Unlimited(),
            links=links,
            identity=_identity(settings),
            policy=SendPolicy(bounce_threshold=THRESHOLD),
            clock=lambda: T0,
        )
        return report.sent == 1

    return SubscriberStatus.ACTIVE, digest


def _subscriber(session: Session, status: SubscriberStatus, bounce_count: int) -> Subscriber:
    subscriber = Subscriber(email="ada@example.org", status=status, bounce_count=bounce_count)
    session.add(subscriber)
    session.commit()
    return subscriber


def _after(session: Session, subscriber: Subscriber) -> tuple[int, SubscriberStatus]:
    session.expire_all()
    return subscriber.bounce_count, subscriber.status


def test_a_5xx_counts_one_bounce(session: Session, kind: tuple[SubscriberStatus, SendKind]) -> None:
    status, send = kind
    subscriber = _subscriber(session, status, bounce_count=0)
    assert not send(subscriber, MemoryBackend(fail=lambda m: BOUNCE))
    assert _after(session, subscriber) == (1, status)  # below the threshold: still mailed


def test_a_5xx_reaching_the_threshold_suppresses(
    session: Session, kind: tuple[SubscriberStatus, SendKind]
) -> None:
    status, send = kind
    subscriber = _subscriber(session, status, bounce_count=THRESHOLD - 1)
    assert not send(subscriber, MemoryBackend(fail=lambda m: BOUNCE))
    assert _after(session, subscriber) == (THRESHOLD, SubscriberStatus.SUPPRESSED)
    nothing = MemoryBackend()
    assert not send(subscriber, nothing)  # and nothing of any kind goes there again
    assert nothing.outbox == []


def test_a_4xx_counts_nothing(session: Session, kind: tuple[SubscriberStatus, SendKind]) -> None:
    status, send = kind
    subscriber = _subscriber(session, status, bounce_count=THRESHOLD - 1)
    try:
        assert not send(subscriber, MemoryBackend(fail=lambda m: LATER))  # a digest retries
    except TransientError:
        session.rollback()  # a confirmation's task retries
    assert _after(session, subscriber) == (THRESHOLD - 1, status)


def test_a_status_that_changed_while_the_message_was_out_stands(session: Session) -> None:
    # An unsubscribe that raced a digest's bounce: counted, but not turned into a suppression.
    subscriber = _subscriber(session, SubscriberStatus.ACTIVE, bounce_count=THRESHOLD - 1)
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber.id)
        .values(status=SubscriberStatus.UNSUBSCRIBED)
    )
    BouncePolicy(threshold=THRESHOLD).record(
        session, subscriber.id, sent_as=SubscriberStatus.ACTIVE
    )
    session.commit()
    assert _after(session, subscriber) == (THRESHOLD, SubscriberStatus.UNSUBSCRIBED)


def test_recording_on_a_session_updates_the_subscriber_it_holds(session: Session) -> None:
    subscriber = _subscriber(session, SubscriberStatus.PENDING, bounce_count=THRESHOLD - 1)
    BouncePolicy(threshold=THRESHOLD).record(
        session, subscriber.id, sent_as=SubscriberStatus.PENDING
    )
    # No expire, no refresh: the object in the session says what the database says.
    assert (subscriber.bounce_count, subscriber.status) == (
        THRESHOLD,
        SubscriberStatus.SUPPRESSED,
    )


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (PermanentError("550", code=550), Outcome.BOUNCED),
        (TransientError("421", code=421), Outcome.RETRY),
        (BackendUnavailable("connection refused"), Outcome.BACKEND_DOWN),
        (DeliveryError("something odd"), Outcome.RETRY),
        (RuntimeError("a bug"), Outcome.RETRY),  # never counted as the mailbox's fault
    ],
)
def test_every_kind_of_mail_classifies_a_failure_the_same_way(
    error: Exception, outcome: Outcome
) -> None:
    assert classify(error) is outcome
