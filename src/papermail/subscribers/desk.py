"""The subscriber desk: find a subscriber, see their story, suppress or unsuppress them,
send a test of their next digest. /ops/subscribers and `papermail subscribers` are thin
shells over these functions; CSV export and import live beside them (exports.py,
imports.py).

Every change an operator makes here is an :class:`~papermail.models.AuditEntry` (audit.py):
who (the /ops operator's name, or ``cli:$USER``), when, what, and the reason they gave.
The functions flush and never commit: the caller commits, then dispatches.

Suppression rules:

- suppress: any status but suppressed; a reason is required. Unsent deliveries are
  skipped at once, as for an unsubscribe.
- unsuppress: back to the status the address had before it was suppressed, and only
  that: active only if it was active, pending if it never confirmed, and an address that
  unsubscribed (before, or while suppressed) stays unsubscribed: leaving is the
  reader's word, never undone by an operator. The bounce count and the soft-bounce score
  start again from 0 (the score counts only soft bounces after it), so the next single
  bounce does not suppress it again.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from papermail.models import (
    AuditEntry,
    BounceEvent,
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
)
from papermail.ops.monitoring import BOUNCE_PREFIX, SUPPRESSED_SKIP_REASON
from papermail.subscribers.audit import Action, DeskRefused, clean_reason, record
from papermail.subscribers.feedback import Mark, marked
from papermail.subscribers.subscriptions import find, skip_unsent

log = logging.getLogger(__name__)

PAGE_SIZE = 50
DELIVERIES_SHOWN = 50
MAX_QUERY = 320  # an address is at most this long: a longer search finds nothing anyway


# --- finding --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listed:
    id: int
    email: str
    status: SubscriberStatus
    created_at: dt.datetime
    confirmed_at: dt.datetime | None
    bounce_count: int


@dataclass(frozen=True, slots=True)
class Page:
    rows: tuple[Listed, ...]
    total: int  # matches, over all pages
    number: int  # 1-based
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def search(
    session: Session,
    *,
    query: str = "",
    status: SubscriberStatus | None = None,
    page: int = 1,
    size: int = PAGE_SIZE,
) -> Page:
    """Subscribers whose address contains ``query`` (any case), of ``status``, by id.

    A page past the last shows the last one.
    """
    conditions = []
    if text := query.strip()[:MAX_QUERY]:
        conditions.append(Subscriber.email.icontains(text, autoescape=True))
    if status is not None:
        conditions.append(Subscriber.status == status)
    total = session.scalar(select(func.count()).select_from(Subscriber).where(*conditions)) or 0
    number = min(max(1, page), max(1, -(-total // size)))
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.status,
            Subscriber.created_at,
            Subscriber.confirmed_at,
            Subscriber.bounce_count,
        )
        .where(*conditions)
        .order_by(Subscriber.id)
        .offset((number - 1) * size)
        .limit(size)
    )
    return Page(rows=tuple(Listed(*row) for row in rows), total=total, number=number, size=size)


def lookup(session: Session, ref: str) -> Subscriber | None:
    """A subscriber by id ("42" or "#42") or address; InvalidEmail for neither."""
    bare = ref.strip().removeprefix("#")
    if bare.isdigit():
        return session.get(Subscriber, int(bare))
    return find(session, ref)


# --- one subscriber's story -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a subscriber's status history."""

    at: dt.datetime
    what: str
    actor: str | None = None  # None: the reader or the system
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    id: int
    edition_id: int
    edition_day: dt.date
    edition_kind: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None

    @property
    def bounced(self) -> bool:
        return self.status is DeliveryStatus.FAILED and (self.last_error or "").startswith(
            BOUNCE_PREFIX
        )


@dataclass(frozen=True, slots=True)
class BounceLine:
    """One stored bounce or complaint event (text from the remote server: untrusted)."""

    received_at: dt.datetime
    kind: str  # hard | soft | complaint
    source: str  # session | smtp | imap | pop3 | ses | postmark
    status: str | None  # "5.1.1"
    diagnostic: str | None
    delivery_id: int | None


@dataclass(frozen=True, slots=True)
class Bounces:
    count: int  # subscribers.bounce_count: what the bounce policy has counted
    events: tuple[BounceLine, ...]  # bounce and complaint events, newest first
    deliveries: tuple[DeliveryLine, ...]  # digests that failed with a bounce, newest first


@dataclass(frozen=True, slots=True)
class Profile:
    subscriber: Subscriber
    history: tuple[Event, ...]  # oldest first
    deliveries: tuple[DeliveryLine, ...]  # newest first, at most DELIVERIES_SHOWN
    bounces: Bounces
    feedback: tuple[Mark, ...]  # newest first
    unsuppress_to: SubscriberStatus | None  # what unsuppress would do; None: not suppressed


def profile(session: Session, subscriber: Subscriber) -> Profile:
    """Everything the desk shows about one subscriber. Reads only."""
    lines = deliveries(session, subscriber.id)
    suppressed = subscriber.status is SubscriberStatus.SUPPRESSED
    return Profile(
        subscriber=subscriber,
        history=history(session, subscriber),
        deliveries=lines,
        bounces=bounces(session, subscriber),
        feedback=tuple(marked(session, subscriber_id=subscriber.id)),
        unsuppress_to=status_before_suppression(session, subscriber) if suppressed else None,
    )


def history(session: Session, subscriber: Subscriber) -> tuple[Event, ...]:
    """The subscriber's status history: their own timestamps and the audit log, in time order.

    The row keeps only the latest confirmation and unsubscribe; the audit log keeps
    every operator action.
    """
    events = [Event(subscriber.created_at, "created")]
    if subscriber.confirmed_at is not None:
        events.append(Event(subscriber.confirmed_at, "confirmed: active"))
    if subscriber.unsubscribed_at is not None:
        events.append(
            Event(subscriber.unsubscribed_at, "unsubscribed", reason=subscriber.unsubscribe_reason)
        )
    entries = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.subscriber_id == subscriber.id)
        .order_by(AuditEntry.at, AuditEntry.id)
    )
    events.extend(Event(e.at, describe(e), e.actor, e.reason) for e in entries)
    # Stable: an operator's entry at the same instant as a timestamp comes after it.
    return tuple(sorted(events, key=lambda e: e.at))


def describe(entry: AuditEntry) -> str:
    """An audit entry in a few words."""
    detail: dict[str, Any] = entry.detail or {}
    if entry.action == Action.SUPPRESS:
        return f"suppressed (was {detail.get('from', '?')})"
    if entry.action == Action.UNSUPPRESS:
        return f"unsuppressed: {detail.get('to', '?')}"
    if entry.action == Action.IMPORT:
        status = detail.get("status", "?")
        return f"imported as {status}" + (
            " (to confirm by email)" if status == SubscriberStatus.PENDING else ""
        )
    if entry.action == Action.TEST_SEND:
        return f"test digest sent to {detail.get('to', '?')}"
    return entry.action


def deliveries(
    session: Session, subscriber_id: int, *, limit: int = DELIVERIES_SHOWN
) -> tuple[DeliveryLine, ...]:
    """The subscriber's latest ledger rows, newest first."""
    return _delivery_lines(session, Delivery.subscriber_id == subscriber_id, limit=limit)


def bounces(session: Session, subscriber: Subscriber) -> Bounces:
    """What is known about mail to this address bouncing: the count the bounce policy
    keeps, every bounce and complaint event stored for it (bounces/events.py: DSNs,
    webhooks, 5xx while sending), and the digests that failed with a bounce."""
    events = session.scalars(
        select(BounceEvent)
        .where(BounceEvent.subscriber_id == subscriber.id)
        .order_by(BounceEvent.received_at.desc(), BounceEvent.id.desc())
        .limit(DELIVERIES_SHOWN)
    )
    failed = _delivery_lines(
        session,
        Delivery.subscriber_id == subscriber.id,
        Delivery.status == DeliveryStatus.FAILED,
        Delivery.last_error.startswith(BOUNCE_PREFIX, autoescape=True),
        limit=DELIVERIES_SHOWN,
    )
    return Bounces(
        count=subscriber.bounce_count,
        events=tuple(
            BounceLine(
                e.received_at, e.kind.value, e.source.value, e.status, e.diagnostic, e.delivery_id
            )
            for e in events
        ),
        deliveries=failed,
    )


def _delivery_lines(
    session: Session, *conditions: ColumnElement[bool], limit: int
) -> tuple[DeliveryLine, ...]:
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.edition_id,
            Edition.day,
            Edition.kind,
            Delivery.status,
            Delivery.attempts,
            Delivery.last_error,
            Delivery.created_at,
            Delivery.sent_at,
        )
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(*conditions)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(limit)
    )
    return tuple(
        DeliveryLine(did, eid, day, kind.value, status, attempts, error, created, sent)
        for did, eid, day, kind, status, attempts, error, created, sent in rows
    )


# --- suppress and unsuppress ----------------------------------------------------------------


def suppress(
    session: Session, subscriber: Subscriber, *, actor: str, reason: str, now: dt.datetime
) -> AuditEntry:
    """Stop all mail to this address, including planned digests; DeskRefused if already."""
    text = clean_reason(reason)
    if subscriber.status is SubscriberStatus.SUPPRESSED:
        raise DeskRefused(f"{subscriber.email} is already suppressed.")
    before = subscriber.status
    subscriber.status = SubscriberStatus.SUPPRESSED
    skip_unsent(session, subscriber_id=subscriber.id, reason=SUPPRESSED_SKIP_REASON)
    entry = record(
        session,
        actor=actor,
        action=Action.SUPPRESS,
        now=now,
        subscriber_id=subscriber.id,
        reason=text,
        detail={"from": before.value, "bounce_count": subscriber.bounce_count},
    )
    session.flush()
    log.warning("%s suppressed subscriber %s (was %s)", actor, subscriber.id, before.value)
    return entry


def unsuppress(
    session: Session, subscriber: Subscriber, *, actor: str, reason: str, now: dt.datetime
) -> SubscriberStatus:
    """Back to the status before suppression (see the module's rules); returns it."""
    text = clean_reason(reason)
    if subscriber.status is not SubscriberStatus.SUPPRESSED:
        raise DeskRefused(f"{subscriber.email} is not suppressed (it is {subscriber.status}).")
    to = status_before_suppression(session, subscriber)
    record(
        session,
        actor=actor,
        action=Action.UNSUPPRESS,
        now=now,
        subscriber_id=subscriber.id,
        reason=text,
        detail={"to": to.value, "bounce_count": subscriber.bounce_count},
    )
    subscriber.status = to
    subscriber.bounce_count = 0
    session.flush()
    log.warning("%s unsuppressed subscriber %s: %s", actor, subscriber.id, to.value)
    return to


def status_before_suppression(session: Session, subscriber: Subscriber) -> SubscriberStatus:
    """What unsuppressing returns this address to: never active unless it was.

    Unsubscribed wins over everything (a reader who left, even while suppressed, stays
    gone). Otherwise the latest operator suppression says what it was; a suppression by
    the bounce policy left no entry, so the row's timestamps say: confirmed means it was
    active (digests bounced), never confirmed means pending (confirmations bounced).
    """
    if subscriber.unsubscribed_at is not None:
        return SubscriberStatus.UNSUBSCRIBED
    latest = session.scalar(
        select(AuditEntry)
        .where(
            AuditEntry.subscriber_id == subscriber.id,
            AuditEntry.action.in_([Action.SUPPRESS.value, Action.UNSUPPRESS.value]),
        )
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(1)
    )
    if latest is not None and latest.action == Action.SUPPRESS:
        before = (latest.detail or {}).get("from")
        if before in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
            return SubscriberStatus(before)
        if before == SubscriberStatus.ACTIVE and subscriber.confirmed_at is not None:
            return SubscriberStatus.ACTIVE
    if subscriber.confirmed_at is not None:
        return SubscriberStatus.ACTIVE
    return SubscriberStatus.PENDING
