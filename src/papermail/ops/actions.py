"""Operator actions: pause and resume sending, retry failures, resend one digest.

The CLI (``papermail pause`` ...) and the /ops page call these and nothing else, so
both behave the same. Every action works through the delivery ledger, so the usual
guarantees hold: a row is claimed before it is sent, and a sent row is never sent
again unless an operator explicitly asks for a resend.

Publishing is the caller's: these functions take a ``publish(ids)`` callable and
call it only after their changes are committed (a task must never name rows that
a worker cannot see yet).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

import redis as redis_lib
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import QueryableAttribute, Session

from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberStatus,
)
from papermail.ops import control
from papermail.pipeline.messages import resend_message_id
from papermail.pipeline.planning import Publish, plan_edition
from papermail.pipeline.redispatch import redispatch_due

log = logging.getLogger(__name__)

RETRY_NOTE = "operator retry"
RESEND_NOTE = "operator resend"


class OperationRefused(ValueError):
    """The action cannot apply (unknown edition, inactive subscriber, ...); says why."""


# --- pause / resume -------------------------------------------------------------------------


def pause(redis: redis_lib.Redis, *, now: dt.datetime, reason: str = "") -> bool:
    """Stop sending within one batch: send_batch checks the flag every few messages and
    hands the rows it has not sent back to pending. False if it was already paused."""
    if control.sending_paused(redis):
        return False
    control.pause_sending(redis, reason=" ".join(reason.split())[:200], now=now)
    log.warning("sending paused by operator", extra={"reason": reason})
    return True


def resume(
    redis: redis_lib.Redis,
    session: Session,
    *,
    now: dt.datetime,
    batch_size: int,
    publish: Publish,
) -> int | None:
    """Clear the pause and queue every row waiting to go out; None if it was not paused.

    Batches that reached a worker during the pause were dropped (the rows stayed pending,
    marked as dispatched), so waiting for the redispatch sweep to find them stale would
    hold mail for a quarter of an hour. Re-queueing them all now is safe: a row already
    queued twice is claimed by one batch, and the other finds nothing to do.
    """
    if not control.sending_paused(redis):
        return None
    control.resume_sending(redis)
    queued = redispatch_due(
        session, now=now, batch_size=batch_size, publish=publish, stale_after=dt.timedelta(0)
    )
    log.warning("sending resumed by operator; %d deliveries queued", queued)
    return queued


# --- retry failed ---------------------------------------------------------------------------


def retry_failed(session: Session, *, edition_id: int, now: dt.datetime) -> int:
    """Give an edition's failed deliveries a fresh start; returns how many. Commits.

    Rows go back to ``retry`` with attempts reset to 0 (a full retry budget: the operator
    fixed whatever made them fail) and are due at once; the redispatch sweep, or a
    caller's ``redispatch_due``, queues them. Only rows of subscribers who are still
    active are retried: a suppressed or unsubscribed subscriber's row stays failed.
    The previous error stays readable in ``last_error`` behind a note.
    """
    if session.get(Edition, edition_id) is None:
        raise OperationRefused(f"no edition {edition_id}")
    active = select(Subscriber.id).where(Subscriber.status == SubscriberStatus.ACTIVE)
    ids = list(
        session.scalars(
            update(Delivery)
            .where(
                Delivery.edition_id == edition_id,
                Delivery.status == DeliveryStatus.FAILED,
                Delivery.subscriber_id.in_(active),
            )
            .values(
                status=DeliveryStatus.RETRY,
                attempts=0,
                next_attempt_at=now,
                dispatched_at=None,
                lease_until=None,
                last_error=_note(RETRY_NOTE, now, Delivery.last_error),
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    log.warning(
        "operator retry: %d failed deliveries of edition %d reset",
        len(ids),
        edition_id,
        extra={"edition_id": edition_id},
    )
    return len(ids)


def _note(
    what: str, now: dt.datetime, previous: QueryableAttribute[str | None]
) -> ColumnElement[str]:
    stamp = f"{what} {now:%Y-%m-%d %H:%M}Z; was: "
    return func.substr(stamp + func.coalesce(previous, ""), 1, 1000)


# --- resend one digest ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResendResult:
    edition_id: int
    delivery_id: int | None
    action: Literal["reset", "planned", "already_queued"]
    previous_status: str | None = None


def resend(
    session: Session,
    *,
    subscriber: Subscriber,
    edition_id: int | None,
    now: dt.datetime,
    publish: Publish,
) -> ResendResult:
    """Send one subscriber one edition again (default: the latest of their frequency).

    The ledger keeps one row per (subscriber, edition), so a resend reuses it: a row
    that was sent, failed or skipped goes back to pending with attempts 0 and a note in
    ``last_error``; a row still on its way is left alone; a missing row is planned.
    Commits, then publishes.
    """
    if subscriber.status is not SubscriberStatus.ACTIVE:
        raise OperationRefused(
            f"{subscriber.email} is {subscriber.status.value}; only active subscribers get mail"
        )
    edition = _edition_for(session, subscriber=subscriber, edition_id=edition_id)
    row = session.scalar(
        select(Delivery).where(
            Delivery.subscriber_id == subscriber.id, Delivery.edition_id == edition.id
        )
    )
    if row is None:
        report = plan_edition(
            session,
            edition=edition,
            now=now,
            batch_size=1,
            publish=publish,
            due_only=False,
            only_subscribers=[subscriber.id],
        )
        delivery_id = session.scalar(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber.id, Delivery.edition_id == edition.id
            )
        )
        if not report.planned:
            raise OperationRefused(f"{subscriber.email} cannot be planned for edition {edition.id}")
        _log_resend(subscriber, edition.id, delivery_id, "planned")
        return ResendResult(edition_id=edition.id, delivery_id=delivery_id, action="planned")
    previous = row.status.value
    if row.status in (DeliveryStatus.PENDING, DeliveryStatus.RETRY, DeliveryStatus.SENDING):
        return ResendResult(
            edition_id=edition.id,
            delivery_id=row.id,
            action="already_queued",
            previous_status=previous,
        )
    row.status = DeliveryStatus.PENDING
    row.attempts = 0
    row.next_attempt_at = None
    row.lease_until = None
    row.dispatched_at = now
    row.last_error = f"{RESEND_NOTE} {now:%Y-%m-%d %H:%M}Z; was {previous}"
    if row.message_id:  # it went out before: the copy needs its own Message-ID
        row.message_id = resend_message_id(row.message_id)
    session.commit()
    publish([row.id])
    _log_resend(subscriber, edition.id, row.id, f"reset from {previous}")
    return ResendResult(
        edition_id=edition.id, delivery_id=row.id, action="reset", previous_status=previous
    )


def _edition_for(session: Session, *, subscriber: Subscriber, edition_id: int | None) -> Edition:
    if edition_id is not None:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise OperationRefused(f"no edition {edition_id}")
        return edition
    kind = EditionKind(subscriber.frequency.value)
    edition = session.scalar(
        select(Edition).where(Edition.kind == kind).order_by(Edition.day.desc()).limit(1)
    )
    if edition is None:
        raise OperationRefused(f"no {kind.value} edition yet")
    return edition


def _log_resend(
    subscriber: Subscriber, edition_id: int, delivery_id: int | None, what: str
) -> None:
    log.warning(
        "operator resend to subscriber %d: %s",
        subscriber.id,
        what,
        extra={
            "subscriber_id": subscriber.id,
            "edition_id": edition_id,
            "delivery_id": delivery_id,
        },
    )
