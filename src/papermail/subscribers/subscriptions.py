"""Subscribers: sign up, confirm, change preferences, leave, get suppressed.

Addresses are validated and normalised at this edge (one row per mailbox). What a
subscriber may choose, and how it is checked, is
:class:`~papermail.subscribers.preferences.Preferences`.
"""

from __future__ import annotations

import datetime as dt

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from papermail.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from papermail.subscribers.preferences import Preferences


class InvalidEmail(ValueError):
    pass


def normalize_email(raw: str) -> str:
    """Lower-cased, IDNA-encoded, syntax-checked; no DNS lookups (they belong to delivery)."""
    raw = raw.strip()
    if len(raw) > 254 or any(c in raw for c in "\r\n\0"):
        raise InvalidEmail("That doesn't look like an email address.")
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from exc
    return result.ascii_email.lower()


def find(session: Session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email == normalize_email(email)))


def apply_preferences(
    subscriber: Subscriber, prefs: Preferences
) -> dict[str, tuple[object, object]]:
    """Set the subscriber's preferences; returns {field: (old, new)} for what changed."""
    changed = {}
    for name, value in prefs.model_dump().items():
        old = getattr(subscriber, name)
        if old != value:
            changed[name] = (old, value)
            setattr(subscriber, name, value)
    return changed


def add_subscriber(
    session: Session, *, email: str, prefs: Preferences, now: dt.datetime, confirmed: bool
) -> tuple[Subscriber, bool]:
    """Create or (re)activate a subscriber. Returns (subscriber, created).

    ``confirmed`` is for operators adding people who already opted in; the web
    flow creates pending subscribers and confirms them through the emailed link.
    A suppressed address stays suppressed: bounces are the mailbox's word.
    """
    address = normalize_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    created = subscriber is None
    if subscriber is None:
        subscriber = Subscriber(email=address, created_at=now)
        session.add(subscriber)
        subscriber.status = SubscriberStatus.PENDING
    apply_preferences(subscriber, prefs)
    if confirmed and subscriber.status is not SubscriberStatus.SUPPRESSED:
        activate(subscriber, now=now)
    session.flush()
    return subscriber, created


def activate(subscriber: Subscriber, *, now: dt.datetime) -> None:
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.unsubscribed_at = None
    subscriber.unsubscribe_reason = None


def unsubscribe(
    session: Session, subscriber: Subscriber, *, now: dt.datetime, reason: str | None = None
) -> bool:
    """Stop all mail at once, including deliveries planned but not yet sent. Idempotent."""
    if subscriber.status is SubscriberStatus.UNSUBSCRIBED:
        return False
    if subscriber.status is not SubscriberStatus.SUPPRESSED:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    subscriber.unsubscribe_reason = (reason or "").strip()[:500] or None
    skip_unsent(session, subscriber_id=subscriber.id, reason="unsubscribed")
    session.flush()
    return True


def skip_unsent(session: Session, *, subscriber_id: int, reason: str) -> int:
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRY]),
        )
        .values(status=DeliveryStatus.SKIPPED, last_error=reason)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def erase(session: Session, subscriber: Subscriber) -> None:
    """Forget a subscriber entirely (GDPR erasure): their row and their ledger."""
    session.delete(subscriber)
    session.flush()
