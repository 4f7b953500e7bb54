"""Subscribers: sign up, confirm, change preferences, leave, get suppressed.

Addresses are validated and normalised at this edge (one row per mailbox). What a
subscriber may choose, and how it is checked, is
:class:`~papermail.subscribers.preferences.Preferences`.

Someone who left (unsubscribed) or whose mailbox bounced (suppressed) comes back only
through double opt-in: the web form, then the emailed link. Nothing else reactivates them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from papermail.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from papermail.subscribers.preferences import Preferences


class InvalidEmail(ValueError):
    pass


class OptedOut(ValueError):
    """An operator tried to add an address that left or bounced: nothing was changed.

    Only the mailbox's owner can bring an unsubscribed address back, by subscribing
    again (the confirmation email is their consent); a suppressed one is not mailed.
    """

    def __init__(self, subscriber: Subscriber) -> None:
        self.email = subscriber.email
        self.status = subscriber.status
        self.since = subscriber.unsubscribed_at
        super().__init__(f"{self.email} is {self.status.value}")


# Statuses an operator cannot add back: only the mailbox's owner can, by opting in again.
OPTED_OUT = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED})


def normalize_email(raw: str) -> str:
    """Lower-cased, IDNA-encoded, syntax-checked; no DNS lookups (they belong to delivery)."""
    raw = raw.strip()
    if len(raw) > 254 or any(c in raw for c in "\r\n\0"):
        raise InvalidEmail("That doesn't look like an email address.")
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from exc
    return (result.ascii_email or result.normalized).lower()


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
    """Create a subscriber or update one who is pending or active. Returns (subscriber, created).

    ``confirmed`` is for operators adding people who already opted in; the web
    flow creates pending subscribers and confirms them through the emailed link.
    Raises OptedOut, changing nothing, for an unsubscribed or suppressed address:
    leaving is the reader's word and bouncing the mailbox's.
    """
    address = normalize_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    created = subscriber is None
    if subscriber is not None and subscriber.status in OPTED_OUT:
        raise OptedOut(subscriber)
    if subscriber is None:
        subscriber = Subscriber(email=address, created_at=now)
        session.add(subscriber)
        subscriber.status = SubscriberStatus.PENDING
    apply_preferences(subscriber, prefs)
    if confirmed:
        activate(subscriber, now=now)
    session.flush()
    return subscriber, created


def revoke_links(subscriber: Subscriber) -> None:
    """Rotate the token version: every confirm and preferences link sent so far stops
    working (unsubscribe links carry no version check). Applied at the next flush."""
    subscriber.token_version = Subscriber.token_version + 1


def activate(subscriber: Subscriber, *, now: dt.datetime) -> None:
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.unsubscribed_at = None
    subscriber.unsubscribe_reason = None


def unsubscribe(
    session: Session, subscriber: Subscriber, *, now: dt.datetime, reason: str | None = None
) -> bool:
    """Stop all mail at once, including deliveries planned but not yet sent. Idempotent.

    Every confirm and preferences link sent before stops working: coming back means
    subscribing again (a fresh confirmation), never an old link.
    """
    if subscriber.status is SubscriberStatus.UNSUBSCRIBED:
        return False
    if subscriber.status is not SubscriberStatus.SUPPRESSED:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    subscriber.unsubscribe_reason = (reason or "").strip()[:500] or None
    revoke_links(subscriber)
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
    return cast(CursorResult[Any], result).rowcount or 0


def erase(session: Session, subscriber: Subscriber) -> None:
    """Forget a subscriber entirely (GDPR erasure): their row and their ledger."""
    session.delete(subscriber)
    session.flush()
