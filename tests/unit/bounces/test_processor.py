"""The processor: a bounce finds its delivery (signed VERP, or our Message-ID and the right
recipient), is stored once, and the bounce policy acts; anything else changes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from papermail.bounces.processor import Intake, Outcome, process_message, process_reports
from papermail.bounces.reports import Report
from papermail.bounces.verp import Verp
from papermail.models import (
    BounceEvent,
    BounceKind,
    BounceSource,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
)
from tests.unit.bounces.conftest import NOW, add_delivery, add_subscriber, fixture

SMTP = BounceSource.SMTP


def _take(
    session: Session,
    intake: Intake,
    raw: bytes,
    *,
    rcpt: str | None = None,
    now: dt.datetime = NOW,
    source: BounceSource = SMTP,
) -> Outcome:
    outcome = process_message(
        session, raw, intake=intake, source=source, now=now, envelope_recipient=rcpt
    )
    session.commit()
    return outcome


def _events(session: Session) -> list[BounceEvent]:
    return list(session.scalars(select(BounceEvent).order_by(BounceEvent.id)))


def _subscriber(session: Session, address: str) -> Subscriber:
    session.expire_all()
    return session.scalars(select(Subscriber).where(Subscriber.email == address)).one()


def test_a_hard_bounce_to_a_verp_address_suppresses_and_is_stored_linked(
    session: Session, intake: Intake, verp: Verp, ada: Delivery
) -> None:
    token = verp.token(delivery_id=ada.id)

    outcome = _take(
        session,
        intake,
        fixture("postfix_hard.mail", token=token),
        rcpt=verp.address(delivery_id=ada.id),
    )

    assert (outcome.stored, outcome.suppressed, outcome.refused) == (1, [ada.subscriber_id], [])
    [event] = _events(session)
    assert (event.kind, event.source, event.delivery_id, event.subscriber_id) == (
        BounceKind.HARD,
        BounceSource.SMTP,
        ada.id,
        ada.subscriber_id,
    )
    assert (event.recipient, event.status, event.received_at) == ("ada@example.org", "5.1.1", NOW)
    assert "User unknown" in (event.diagnostic or "")
    ada_now = _subscriber(session, "ada@example.org")
    assert (ada_now.status, ada_now.bounce_count) == (SubscriberStatus.SUPPRESSED, 1)


def test_the_same_bounce_twice_is_stored_once_and_counted_once(
    session: Session, intake: Intake, verp: Verp, ada: Delivery
) -> None:
    raw = fixture("gmail_policy.mail", token=verp.token(delivery_id=ada.id))
    rcpt = verp.address(delivery_id=ada.id)

    first = _take(session, intake, raw, rcpt=rcpt)
    again = _take(session, intake, raw, rcpt=rcpt, now=NOW + dt.timedelta(hours=1))

    assert (first.stored, again.stored, again.duplicates) == (1, 0, 1)
    assert len(_events(session)) == 1
    assert _subscriber(session, "ada@example.org").bounce_count == 1


@pytest.mark.parametrize(
    "rcpt",
    [
        pytest.param("bounces+d1-aaaaaaaaaaaaaaaa@bounces.papers.example.org", id="forged"),
        pytest.param("bounces+d2-{mac}@bounces.papers.example.org", id="another-delivery"),
        pytest.param("bounces+d1@bounces.papers.example.org", id="truncated"),
        pytest.param("postmaster@bounces.papers.example.org", id="not-verp"),
    ],
)
def test_a_bounce_to_a_bad_verp_address_changes_nothing(
    session: Session, intake: Intake, verp: Verp, ada: Delivery, rcpt: str
) -> None:
    mac = verp.token(delivery_id=ada.id).split("-")[1]

    outcome = _take(session, intake, fixture("postfix_hard.mail"), rcpt=rcpt.format(mac=mac))

    assert outcome.stored == 0 and len(outcome.refused) == 1
    assert _events(session) == []
    assert _subscriber(session, "ada@example.org").status is SubscriberStatus.ACTIVE


def test_a_forged_token_in_a_polled_bounces_headers_changes_nothing(
    session: Session, intake: Intake, ada: Delivery
) -> None:
    raw = fixture("postfix_hard.mail", token="d1-aaaaaaaaaaaaaaaa")

    outcome = _take(session, intake, raw, source=BounceSource.IMAP)

    assert outcome.refused == ["forged or damaged VERP address (bad VERP signature)"]
    assert _events(session) == []


def test_without_verp_our_message_id_and_the_right_recipient_find_the_delivery(
    session: Session, intake: Intake, ada: Delivery
) -> None:
    # VERP off (or an MTA that dropped it): the DSN quotes the original's Message-ID.
    raw = fixture("postfix_hard.mail", verp_to="digest@papers.example.org")

    outcome = _take(session, intake, raw, source=BounceSource.IMAP)

    assert outcome.stored == 1
    [event] = _events(session)
    assert (event.delivery_id, event.source) == (ada.id, BounceSource.IMAP)


def test_a_message_id_alone_does_not_name_another_readers_delivery(
    session: Session, intake: Intake, ada: Delivery
) -> None:
    # Message-IDs are no secret: a forged DSN naming ada's delivery but another recipient.
    raw = fixture("postfix_hard.mail", verp_to="digest@papers.example.org").replace(
        b"ada@example.org", b"mallory@example.org"
    )

    outcome = _take(session, intake, raw)

    assert outcome.refused == ["the report's recipient is not delivery 1's"]
    assert _subscriber(session, "ada@example.org").status is SubscriberStatus.ACTIVE


def test_a_bounce_naming_nothing_of_ours_is_refused(
    session: Session, intake: Intake, ada: Delivery
) -> None:
    raw = fixture("exim_soft.mail", verp_to="someone@elsewhere.example")  # no Message-ID either

    outcome = _take(session, intake, raw)

    assert outcome.refused == ["names nothing we sent (no VERP address, no Message-ID of ours)"]


def test_a_policy_refusal_counts_toward_the_threshold_instead_of_suppressing(
    session: Session, intake: Intake, verp: Verp
) -> None:
    grace = add_subscriber(session, "marie@gmail.example")
    deliveries = [add_delivery(session, grace, day=dt.date(2026, 11, d)) for d in (24, 25, 26)]
    session.commit()
    statuses = []
    for delivery in deliveries:
        token = verp.token(delivery_id=delivery.id)
        _take(
            session,
            intake,
            fixture("gmail_policy.mail", token=token),
            rcpt=verp.address(delivery_id=delivery.id),
        )
        statuses.append(_subscriber(session, "marie@gmail.example").status)

    # 5.7.1 says the message was refused, not that the address is gone: three, like 5xx.
    assert statuses == [
        SubscriberStatus.ACTIVE,
        SubscriberStatus.ACTIVE,
        SubscriberStatus.SUPPRESSED,
    ]


def test_soft_bounces_add_up_until_the_score_suppresses(
    session: Session, intake: Intake, verp: Verp
) -> None:
    grace = add_subscriber(session, "grace@example.net")
    days = [dt.date(2026, 11, d) for d in range(20, 27)]
    deliveries = [add_delivery(session, grace, day=d) for d in days]
    session.commit()
    seen = []
    for delivery, day in zip(deliveries, days, strict=True):
        at = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
        token = verp.token(delivery_id=delivery.id)
        raw = fixture("postfix_soft.mail", token=token).replace(b"d2@", f"d{delivery.id}@".encode())
        _take(session, intake, raw, rcpt=verp.address(delivery_id=delivery.id), now=at)
        seen.append(_subscriber(session, "grace@example.net").status)

    # A full mailbox a day, weight 1 halving every 7 days: 1, 1.9, 2.7, 3.5, 4.1, 4.8, 5.3.
    assert seen.index(SubscriberStatus.SUPPRESSED) == 6
    assert len(_events(session)) == 7
    assert _subscriber(session, "grace@example.net").bounce_count == 0  # soft ones don't count


def test_soft_bounces_far_apart_decay_and_never_suppress(
    session: Session, intake: Intake, verp: Verp
) -> None:
    grace = add_subscriber(session, "grace@example.net")
    session.commit()
    for n in range(12):  # one a month for a year
        day = dt.date(2025, 12, 1) + dt.timedelta(days=30 * n)
        delivery = add_delivery(session, grace, day=day)
        session.commit()
        at = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
        raw = fixture("postfix_soft.mail", token=verp.token(delivery_id=delivery.id)).replace(
            b"d2@", f"d{delivery.id}@".encode()
        )
        _take(session, intake, raw, rcpt=verp.address(delivery_id=delivery.id), now=at)

    assert _subscriber(session, "grace@example.net").status is SubscriberStatus.ACTIVE


def test_a_complaint_unsubscribes_suppresses_and_skips_what_is_queued(
    session: Session, intake: Intake, verp: Verp, ada: Delivery
) -> None:
    subscriber = session.get(Subscriber, ada.subscriber_id)
    assert subscriber is not None
    version = subscriber.token_version
    queued = add_delivery(
        session, subscriber, day=dt.date(2026, 11, 27), status=DeliveryStatus.PENDING
    )
    session.commit()
    # From the feedback loop's mailbox: the VERP address is in the original's Return-Path.
    raw = fixture("arf_complaint.mail", token=verp.token(delivery_id=ada.id))

    outcome = _take(session, intake, raw, source=BounceSource.IMAP)

    assert outcome.stored == 1 and outcome.suppressed == [subscriber.id]
    after = _subscriber(session, "ada@example.org")
    assert after.status is SubscriberStatus.SUPPRESSED
    assert after.unsubscribed_at == NOW and after.unsubscribe_reason == "complaint: marked as spam"
    assert after.token_version == version + 1  # every preferences link revoked
    assert session.get(Delivery, queued.id).status is DeliveryStatus.SKIPPED  # type: ignore[union-attr]
    [event] = _events(session)
    assert (event.kind, event.delivery_id) == (BounceKind.COMPLAINT, ada.id)


def test_a_late_bounce_does_not_override_a_newer_unsubscribe(
    session: Session, intake: Intake, verp: Verp, ada: Delivery
) -> None:
    subscriber = session.get(Subscriber, ada.subscriber_id)
    assert subscriber is not None
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    session.commit()

    outcome = _take(
        session,
        intake,
        fixture("postfix_hard.mail", token=verp.token(delivery_id=ada.id)),
        rcpt=verp.address(delivery_id=ada.id),
    )

    assert outcome.stored == 1 and outcome.suppressed == []
    assert _subscriber(session, "ada@example.org").status is SubscriberStatus.UNSUBSCRIBED


def test_a_confirmations_bounce_names_its_subscriber_and_suppresses_the_signup(
    session: Session, intake: Intake, verp: Verp
) -> None:
    pending = add_subscriber(session, "ada@example.org", SubscriberStatus.PENDING)
    session.commit()
    rcpt = verp.address(subscriber_id=pending.id)

    outcome = _take(
        session,
        intake,
        fixture("postfix_hard.mail", token=rcpt.split("+")[1].split("@")[0]),
        rcpt=rcpt,
    )

    assert outcome.suppressed == [pending.id]
    [event] = _events(session)
    assert event.delivery_id is None and event.subscriber_id == pending.id


def test_a_bounce_for_an_erased_delivery_is_refused(
    session: Session, intake: Intake, verp: Verp
) -> None:
    outcome = _take(
        session, intake, fixture("postfix_hard.mail"), rcpt=verp.address(delivery_id=99)
    )

    assert outcome.refused == ["no delivery 99 (erased?)"]


def test_a_trusted_webhook_may_name_the_subscriber_by_address_alone(
    session: Session, intake: Intake
) -> None:
    add_subscriber(session, "ada@example.org")
    session.commit()
    report = Report(
        kind=BounceKind.HARD, recipient="Ada@Example.org", status="5.1.1", reference="pm:1"
    )

    untrusted = process_reports(
        session, [report], intake=intake, source=BounceSource.POSTMARK, now=NOW
    )
    trusted = process_reports(
        session, [report], intake=intake, source=BounceSource.POSTMARK, now=NOW, trusted=True
    )
    session.commit()

    assert untrusted.refused and trusted.stored == 1
    assert _subscriber(session, "ada@example.org").status is SubscriberStatus.SUPPRESSED
    unknown = Report(kind=BounceKind.HARD, recipient="nobody@example.org", reference="pm:2")
    outcome = process_reports(
        session, [unknown], intake=intake, source=BounceSource.POSTMARK, now=NOW, trusted=True
    )
    assert outcome.refused == ["no subscriber with that address"]
    assert session.scalar(select(func.count()).select_from(BounceEvent)) == 1
