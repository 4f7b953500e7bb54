"""A soft bounce as the intake stores it, then scored: what the score tests share."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from papermail.bounces.events import store
from papermail.models import BounceKind, BounceSource, Subscriber, SubscriberStatus
from papermail.subscribers.bounces import BouncePolicy

ACTIVE = (SubscriberStatus.ACTIVE,)


def soft_bounce(
    session: Session, policy: BouncePolicy, subscriber: Subscriber, at: dt.datetime
) -> tuple[float, bool]:
    """Store a "mailbox full" DSN for ``subscriber`` at ``at``; (the score, suppressed?)."""
    store(
        session,
        kind=BounceKind.SOFT,
        source=BounceSource.IMAP,
        subscriber_id=subscriber.id,
        delivery_id=None,
        recipient=subscriber.email,
        status="4.2.2",
        diagnostic="mailbox full",
        message=f"m-{at.isoformat()}",
        now=at,
    )
    return policy.record_soft(session, subscriber.id, sent_as=ACTIVE, now=at)
