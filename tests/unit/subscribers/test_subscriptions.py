"""Subscribers: addresses normalised at the edge, preferences applied, leaving stops mail."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.models import Delivery, DeliveryStatus, EditionKind, Subscriber, SubscriberStatus
from papermail.pipeline.editions import build_edition
from papermail.pipeline.ingest import ingest_papers
from papermail.pipeline.planning import plan_edition
from papermail.sources.hf import load_sample
from papermail.subscribers import subscriptions
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import (
    InvalidEmail,
    add_subscriber,
    normalize_email,
    unsubscribe,
)
from tests.conftest import FIXED_NOW

NOW = FIXED_NOW


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("ada@example.org", "ada@example.org"),
        ("  Ada.Lovelace@Example.ORG \n", "ada.lovelace@example.org"),
        ("ada+papers@example.org", "ada+papers@example.org"),
        ("ada@bücher.de", "ada@xn--bcher-kva.de"),
        ("ADA@BÜCHER.DE", "ada@xn--bcher-kva.de"),
    ],
)
def test_addresses_are_normalised(raw: str, normalised: str) -> None:
    assert normalize_email(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "not an address",
        "ada@",
        "@example.org",
        "ada@@example.org",
        "ada@example",
        "ada@example.org\r\nBcc: evil@example.net",
        "ada@example.org\nBcc: evil@example.net",
        "ada\r@example.org",
        "ada\0@example.org",
        "adá@example.org",  # non-ASCII local part: needs SMTPUTF8, which we do not promise
        "用户@example.org",
        "a" * 250 + "@example.org",
        "ada@example.org, bob@example.org",
        "Ada <ada@example.org>",
    ],
)
def test_bad_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


def test_invalid_email_says_what_is_wrong() -> None:
    with pytest.raises(InvalidEmail) as info:
        normalize_email("ada@")
    assert str(info.value)


def test_invalid_email_is_a_value_error() -> None:
    assert issubclass(InvalidEmail, ValueError)


# --- preferences --------------------------------------------------------------------------


def test_apply_preferences_reports_what_changed(session: Session) -> None:
    subscriber, _ = add_subscriber(
        session, email="a@example.org", prefs=Preferences(), now=NOW, confirmed=True
    )
    changed = subscriptions.apply_preferences(subscriber, Preferences(max_papers=3))
    assert changed == {"max_papers": (10, 3)}
    assert subscriptions.apply_preferences(subscriber, Preferences(max_papers=3)) == {}


# --- adding -------------------------------------------------------------------------------


def test_add_creates_a_pending_subscriber_by_default(session: Session) -> None:
    subscriber, created = add_subscriber(
        session, email=" Ada@Example.org ", prefs=Preferences(), now=NOW, confirmed=False
    )
    assert created is True
    assert subscriber.email == "ada@example.org"
    assert subscriber.status is SubscriberStatus.PENDING
    assert subscriber.confirmed_at is None
    assert subscriber.created_at == NOW


def test_add_confirmed_activates(session: Session) -> None:
    subscriber, _ = add_subscriber(
        session, email="ada@example.org", prefs=Preferences(), now=NOW, confirmed=True
    )
    assert subscriber.status is SubscriberStatus.ACTIVE
    assert subscriber.confirmed_at == NOW


def test_adding_the_same_mailbox_twice_updates_one_row(session: Session) -> None:
    add_subscriber(session, email="ada@example.org", prefs=Preferences(), now=NOW, confirmed=True)
    again, created = add_subscriber(
        session, email="ADA@example.org", prefs=Preferences(max_papers=3), now=NOW, confirmed=True
    )
    assert created is False
    assert again.max_papers == 3
    assert len(list(session.scalars(select(Subscriber)))) == 1


def test_add_refuses_a_bad_address(session: Session) -> None:
    with pytest.raises(InvalidEmail):
        add_subscriber(
            session,
            email="ada@example.org\r\nBcc: x@example.net",
            prefs=Preferences(),
            now=NOW,
            confirmed=True,
        )
    assert list(session.scalars(select(Subscriber))) == []


def test_an_operator_cannot_add_back_someone_who_unsubscribed(session: Session) -> None:
    # Leaving is the reader's word: only they can come back, through double opt-in.
    subscriber, _ = add_subscriber(
        session, email="ada@example.org", prefs=Preferences(max_papers=4), now=NOW, confirmed=True
    )
    unsubscribe(session, subscriber, now=NOW, reason="too much mail")
    later = NOW + dt.timedelta(days=3)
    for confirmed in (True, False):
        with pytest.raises(subscriptions.OptedOut) as info:
            add_subscriber(
                session,
                email="ADA@example.org",
                prefs=Preferences(max_papers=9),
                now=later,
                confirmed=confirmed,
            )
        assert info.value.status is SubscriberStatus.UNSUBSCRIBED
        assert info.value.since == NOW
    assert subscriber.status is SubscriberStatus.UNSUBSCRIBED
    assert subscriber.unsubscribe_reason == "too much mail" and subscriber.max_papers == 4
    assert subscriber.confirmed_at == NOW


def test_a_suppressed_address_cannot_be_added_again(session: Session) -> None:
    subscriber, _ = add_subscriber(
        session, email="ada@example.org", prefs=Preferences(), now=NOW, confirmed=True
    )
    subscriber.status = SubscriberStatus.SUPPRESSED
    session.flush()
    with pytest.raises(subscriptions.OptedOut) as info:
        add_subscriber(
            session,
            email="ada@example.org",
            prefs=Preferences(max_papers=3),
            now=NOW,
            confirmed=True,
        )
    assert info.value.status is SubscriberStatus.SUPPRESSED
    assert subscriber.status is SubscriberStatus.SUPPRESSED and subscriber.max_papers == 10


def test_adding_a_pending_subscriber_as_confirmed_activates_them(session: Session) -> None:
    add_subscriber(session, email="ada@example.org", prefs=Preferences(), now=NOW, confirmed=False)
    again, created = add_subscriber(
        session, email="ada@example.org", prefs=Preferences(), now=NOW, confirmed=True
    )
    assert created is False and again.status is SubscriberStatus.ACTIVE


def test_find_normalises_the_address(session: Session) -> None:
    add_subscriber(session, email="ada@example.org", prefs=Preferences(), now=NOW, confirmed=True)
    found = subscriptions.find(session, "  ADA@example.org")
    assert found is not None and found.email == "ada@example.org"
    assert subscriptions.find(session, "bob@example.org") is None


# --- leaving ------------------------------------------------------------------------------


@pytest.fixture
def planned(session: Session) -> tuple[Subscriber, Subscriber]:
    """Two active subscribers, each with one planned delivery of today's edition."""
    ingest_papers(session, result=load_sample(), now=NOW)
    edition = build_edition(session, day=dt.date(2026, 11, 27), kind=EditionKind.DAILY, size=10)
    assert edition.edition is not None
    leaving, _ = add_subscriber(
        session, email="leaving@example.org", prefs=Preferences(), now=NOW, confirmed=True
    )
    staying, _ = add_subscriber(
        session, email="staying@example.org", prefs=Preferences(), now=NOW, confirmed=True
    )
    session.commit()
    plan_edition(
        session,
        edition=edition.edition,
        now=NOW,
        batch_size=10,
        publish=lambda ids: None,
        due_only=False,
    )
    return leaving, staying


def deliveries_of(session: Session, subscriber: Subscriber) -> list[Delivery]:
    session.expire_all()
    return list(session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber.id)))


def extra_delivery(session: Session, template: Delivery, status: DeliveryStatus) -> Delivery:
    """Another edition's delivery for the same subscriber, in ``status``."""
    edition = build_edition(
        session, day=dt.date(2026, 11, 27), kind=EditionKind.WEEKLY, size=5
    ).edition
    assert edition is not None
    row = Delivery(
        subscriber_id=template.subscriber_id,
        edition_id=edition.id,
        variant_key=template.variant_key,
        status=status,
    )
    session.add(row)
    session.commit()
    return row


@pytest.mark.parametrize("status", [DeliveryStatus.PENDING, DeliveryStatus.RETRY])
def test_unsubscribe_skips_unsent_deliveries(
    session: Session, planned: tuple[Subscriber, Subscriber], status: DeliveryStatus
) -> None:
    leaving, staying = planned
    [row] = deliveries_of(session, leaving)
    row.status = status
    session.commit()
    assert unsubscribe(session, leaving, now=NOW, reason="  too much mail  ") is True
    session.commit()
    [row] = deliveries_of(session, leaving)
    assert row.status is DeliveryStatus.SKIPPED
    assert row.last_error == "unsubscribed"
    assert [d.status for d in deliveries_of(session, staying)] == [DeliveryStatus.PENDING]
    assert leaving.status is SubscriberStatus.UNSUBSCRIBED
    assert leaving.unsubscribed_at == NOW
    assert leaving.unsubscribe_reason == "too much mail"


@pytest.mark.parametrize("status", [DeliveryStatus.SENT, DeliveryStatus.FAILED])
def test_unsubscribe_keeps_the_record_of_finished_deliveries(
    session: Session, planned: tuple[Subscriber, Subscriber], status: DeliveryStatus
) -> None:
    leaving, _ = planned
    [row] = deliveries_of(session, leaving)
    row.status = status
    session.commit()
    extra = extra_delivery(session, row, DeliveryStatus.PENDING)
    unsubscribe(session, leaving, now=NOW)
    session.commit()
    statuses = {d.id: d.status for d in deliveries_of(session, leaving)}
    assert statuses == {row.id: status, extra.id: DeliveryStatus.SKIPPED}


def test_unsubscribe_is_idempotent(
    session: Session, planned: tuple[Subscriber, Subscriber]
) -> None:
    leaving, _ = planned
    assert unsubscribe(session, leaving, now=NOW) is True
    later = NOW + dt.timedelta(days=1)
    assert unsubscribe(session, leaving, now=later) is False
    assert leaving.unsubscribed_at == NOW


def test_unsubscribing_rotates_the_token_version_once(
    session: Session, planned: tuple[Subscriber, Subscriber]
) -> None:
    # Every confirm and preferences link sent before stops working (they carry the version).
    leaving, staying = planned
    assert leaving.token_version == 1
    unsubscribe(session, leaving, now=NOW)
    session.commit()
    assert leaving.token_version == 2
    unsubscribe(session, leaving, now=NOW)  # already out: nothing to revoke again
    session.commit()
    assert (leaving.token_version, staying.token_version) == (2, 1)


def test_unsubscribe_reason_is_optional_and_bounded(
    session: Session, planned: tuple[Subscriber, Subscriber]
) -> None:
    leaving, staying = planned
    unsubscribe(session, leaving, now=NOW, reason="   ")
    assert leaving.unsubscribe_reason is None
    unsubscribe(session, staying, now=NOW, reason="x" * 2000)
    assert staying.unsubscribe_reason == "x" * 500


def test_a_suppressed_subscriber_who_unsubscribes_stays_suppressed(
    session: Session, planned: tuple[Subscriber, Subscriber]
) -> None:
    leaving, _ = planned
    leaving.status = SubscriberStatus.SUPPRESSED
    session.commit()
    unsubscribe(session, leaving, now=NOW)
    session.commit()
    assert leaving.status is SubscriberStatus.SUPPRESSED
    assert [d.status for d in deliveries_of(session, leaving)] == [DeliveryStatus.SKIPPED]


def test_erase_forgets_the_subscriber_and_their_ledger(
    session: Session, planned: tuple[Subscriber, Subscriber]
) -> None:
    leaving, staying = planned
    subscriptions.erase(session, leaving)
    session.commit()
    assert subscriptions.find(session, "leaving@example.org") is None
    assert deliveries_of(session, leaving) == []
    assert len(deliveries_of(session, staying)) == 1


def test_an_erased_subscribers_id_is_never_given_to_someone_new(session: Session) -> None:
    # Unsubscribe links never expire: a reused id would let the old link act on the new person.
    first, _ = add_subscriber(
        session, email="first@example.org", prefs=Preferences(), now=FIXED_NOW, confirmed=True
    )
    old_id = first.id
    subscriptions.erase(session, first)
    session.commit()
    second, _ = add_subscriber(
        session, email="second@example.org", prefs=Preferences(), now=FIXED_NOW, confirmed=True
    )
    session.commit()
    assert second.id > old_id
