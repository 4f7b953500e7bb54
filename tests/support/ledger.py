"""Ledger rows built directly, with chosen timestamps, for the ops and dashboard tests."""

from __future__ import annotations

import datetime as dt
from itertools import count

from sqlalchemy.orm import Session

from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Variant,
)
from papermail.ops import monitoring
from tests.conftest import FIXED_NOW

_emails = count(1)


def seed_edition(
    session: Session,
    *,
    day: dt.date,
    kind: EditionKind = EditionKind.DAILY,
    created_at: dt.datetime | None = None,
) -> Edition:
    edition = Edition(day=day, kind=kind, created_at=created_at or FIXED_NOW)
    session.add(edition)
    session.flush()
    session.add(
        Variant(
            key=f"v{edition.id}",
            edition_id=edition.id,
            format="html",
            selection=[],
            created_at=FIXED_NOW,
        )
    )
    session.flush()
    return edition


def seed_subscriber(
    session: Session,
    *,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    email: str | None = None,
    frequency: Frequency = Frequency.DAILY,
) -> Subscriber:
    subscriber = Subscriber(
        email=email or f"reader{next(_emails)}@example.org",
        status=status,
        frequency=frequency,
        created_at=FIXED_NOW,
    )
    session.add(subscriber)
    session.flush()
    return subscriber


def seed_delivery(
    session: Session,
    *,
    edition: Edition,
    status: DeliveryStatus,
    subscriber: Subscriber | None = None,
    created_at: dt.datetime = FIXED_NOW,
    sent_at: dt.datetime | None = None,
    last_error: str | None = None,
    attempts: int = 1,
) -> Delivery:
    subscriber = subscriber or seed_subscriber(session)
    if status is DeliveryStatus.SENT and sent_at is None:
        sent_at = created_at
    delivery = Delivery(
        subscriber_id=subscriber.id,
        edition_id=edition.id,
        variant_key=f"v{edition.id}",
        status=status,
        attempts=attempts,
        created_at=created_at,
        sent_at=sent_at,
        last_error=last_error,
    )
    session.add(delivery)
    session.flush()
    return delivery


def seed_funnel(
    session: Session,
    edition: Edition,
    counts: dict[str, int],
    *,
    created_at: dt.datetime = FIXED_NOW,
) -> None:
    """Deliveries per funnel column ("suppressed" = skipped for a suppressed subscriber)."""
    for name, n in counts.items():
        for _ in range(n):
            if name == "suppressed":
                who = seed_subscriber(session, status=SubscriberStatus.SUPPRESSED)
                seed_delivery(
                    session,
                    edition=edition,
                    status=DeliveryStatus.SKIPPED,
                    subscriber=who,
                    created_at=created_at,
                    last_error=monitoring.SUPPRESSED_SKIP_REASON,
                )
            else:
                seed_delivery(
                    session, edition=edition, status=DeliveryStatus(name), created_at=created_at
                )
    session.commit()


# --- broker ---------------------------------------------------------------------------------
