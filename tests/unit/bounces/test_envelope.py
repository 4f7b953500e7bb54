"""The send path with VERP on: every digest and confirmation leaves with its own signed
envelope sender, and a 5xx in the session is an event (source "session") as well as a
count for the bounce policy."""

from __future__ import annotations

import dataclasses
import datetime as dt

import fakeredis
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.bounces.verp import Verp, VerpClaims
from papermail.config import Settings
from papermail.delivery.base import PermanentError
from papermail.delivery.memory import MemoryBackend
from papermail.models import (
    BounceEvent,
    BounceKind,
    BounceSource,
    Delivery,
    EditionKind,
    Subscriber,
    SubscriberStatus,
)
from papermail.pipeline.editions import build_edition
from papermail.pipeline.ingest import ingest_papers
from papermail.pipeline.planning import plan_edition
from papermail.pipeline.ratelimit import Unlimited
from papermail.pipeline.rendering import EditionStore, make_environment
from papermail.pipeline.sending import SendPolicy, send_batch
from papermail.pipeline.variants import Identity, TemplateSource
from papermail.sources.hf import load_sample
from papermail.subscribers import confirmations
from papermail.subscribers.tokens import Links
from papermail.wiring import Wiring
from tests.conftest import FIXED_NOW

NOW = dt.datetime(2026, 11, 27, 7, 0, tzinfo=dt.UTC)  # the sample's edition day
REFUSED = PermanentError("RCPT TO refused: 550 5.1.1 <gone@example.org>: no such user", code=550)


@pytest.fixture
def identity(settings: Settings, verp: Verp) -> Identity:
    return Identity(
        mail_from=settings.mail_from,
        envelope_from=settings.sender_address,
        domain=settings.mail_domain,
        list_name=settings.list_name,
        verp=verp,
    )


def _send_digests(
    session: Session, settings: Settings, links: Links, identity: Identity, backend: MemoryBackend
) -> list[int]:
    for address in ("ada@example.org", "gone@example.org"):
        session.add(Subscriber(email=address, status=SubscriberStatus.ACTIVE))
    ingest_papers(session, result=load_sample(), now=FIXED_NOW)
    edition = build_edition(session, day=NOW.date(), kind=EditionKind.DAILY, size=20).edition
    assert edition is not None
    session.commit()
    ids: list[int] = []
    plan_edition(
        session, edition=edition, now=NOW, batch_size=100, publish=ids.extend, due_only=False
    )
    env = make_environment(settings.templates_dir)
    send_batch(
        session,
        delivery_ids=ids,
        backend=backend,
        templates=TemplateSource(
            store=EditionStore(fakeredis.FakeRedis(), ttl_seconds=60),
            env=env,
            links=links,
            identity=identity,
        ),
        limiter=Unlimited(),
        links=links,
        identity=identity,
        policy=SendPolicy(bounce_threshold=3),
        clock=lambda: NOW,
    )
    return ids


def test_each_digest_leaves_with_its_deliverys_verp_sender(
    session: Session, settings: Settings, links: Links, identity: Identity, verp: Verp
) -> None:
    backend = MemoryBackend()
    _send_digests(session, settings, links, identity, backend)

    deliveries = {d.subscriber_id: d.id for d in session.scalars(select(Delivery))}
    subscribers = {s.email: s.id for s in session.scalars(select(Subscriber))}
    assert len(backend.outbox) == 2
    for message in backend.outbox:
        claims = verp.read_address(message.sender)
        assert claims == VerpClaims(delivery_id=deliveries[subscribers[message.recipient]])


def test_without_verp_every_digest_has_the_one_sender(
    session: Session, settings: Settings, links: Links, identity: Identity
) -> None:
    backend = MemoryBackend()
    _send_digests(session, settings, links, dataclasses.replace(identity, verp=None), backend)

    assert {m.sender for m in backend.outbox} == {settings.sender_address}


def test_a_refusal_in_the_session_is_an_event_too(
    session: Session, settings: Settings, links: Links, identity: Identity
) -> None:
    backend = MemoryBackend(fail=lambda m: REFUSED if m.recipient.startswith("gone") else None)
    _send_digests(session, settings, links, identity, backend)

    [event] = session.scalars(select(BounceEvent)).all()
    gone = session.scalars(select(Subscriber).where(Subscriber.email == "gone@example.org")).one()
    delivery = session.scalars(select(Delivery).where(Delivery.subscriber_id == gone.id)).one()
    assert (event.kind, event.source, event.status) == (
        BounceKind.HARD,
        BounceSource.SESSION,
        "5.1.1",
    )
    assert (event.delivery_id, event.subscriber_id, event.received_at) == (
        delivery.id,
        gone.id,
        NOW,
    )
    assert gone.bounce_count == 1 and gone.status is SubscriberStatus.ACTIVE  # one of three


def test_a_confirmation_leaves_with_its_subscribers_verp_sender(
    session: Session, settings: Settings, links: Links, identity: Identity, verp: Verp
) -> None:
    pending = Subscriber(email="new@example.org", status=SubscriberStatus.PENDING)
    session.add(pending)
    session.commit()
    backend = MemoryBackend(fail=lambda m: REFUSED)

    sent = confirmations.send_confirmation(
        session,
        subscriber_id=pending.id,
        env=make_environment(settings.templates_dir),
        links=links,
        identity=identity,
        backend=backend,
        now=NOW,
    )
    session.commit()

    assert sent is False
    [event] = session.scalars(select(BounceEvent)).all()
    assert (event.source, event.delivery_id, event.subscriber_id) == (
        BounceSource.SESSION,
        None,
        pending.id,
    )
    backend.fail = None
    confirmations.send_confirmation(
        session,
        subscriber_id=pending.id,
        env=make_environment(settings.templates_dir),
        links=links,
        identity=identity,
        backend=backend,
        now=NOW,
    )
    [message] = backend.outbox
    assert verp.read_address(message.sender) == VerpClaims(subscriber_id=pending.id)


def test_wiring_turns_verp_on_with_a_bounce_domain(settings: Settings) -> None:
    off = Wiring(settings)
    on = Wiring(settings.model_copy(update={"bounce_domain": "bounces.papers.example.org"}))
    forced = Wiring(settings.model_copy(update={"verp": True}))

    assert off.identity.verp is None
    assert on.identity.envelope_for(delivery_id=3).endswith("@bounces.papers.example.org")
    assert forced.identity.envelope_for(delivery_id=3).endswith("@papers.example.org")
