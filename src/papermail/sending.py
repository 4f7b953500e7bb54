"""Send a batch of planned deliveries, exactly once each.

The ledger row is the truth. A batch first *claims* its rows with one
conditional UPDATE (pending/retry, or sending with an expired lease ->
sending), so two workers handed the same ids never both send. After the
server's 250 the row is marked sent and committed at once: the only window in
which a crash can cause a second copy is between that 250 and that commit, one
message wide. A batch that runs past its lease stops, so a reclaimed row is
never sent by two workers at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from papermail.delivery.base import (
    DeliveryError,
    MailBackend,
    MailConnection,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from papermail.messages import make_message_id
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
)
from papermail.ratelimit import RateLimiter
from papermail.tokens import Links
from papermail.variants import Identity, TemplateSource

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
PAUSE_CHECK_EVERY = 10  # messages; a pause takes effect within this many sends
LEASE_MARGIN = dt.timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class SendPolicy:
    max_attempts: int = 5
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 6 * 3600.0
    bounce_threshold: int = 3
    lease_seconds: int = 300

    def backoff(self, attempts: int, rng: random.Random | None = None) -> dt.timedelta:
        """Exponential, with +-50% jitter so retries of one outage don't stampede."""
        base = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(0, attempts - 1))
        return dt.timedelta(seconds=base * (rng or random).uniform(0.5, 1.5))


@dataclass
class BatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    released: int = 0
    paused: bool = False


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    subscriber_id: int
    edition_id: int
    variant_key: str
    attempts: int
    email: str
    subscriber_status: SubscriberStatus
    token_version: int


def claim(
    session: Session, *, ids: Sequence[int], now: dt.datetime, lease: dt.timedelta
) -> list[int]:
    """Atomically take the claimable rows among ``ids``; commits."""
    stmt = (
        update(Delivery)
        .where(
            Delivery.id.in_(list(ids)),
            or_(
                and_(
                    Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRY]),
                    or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                ),
                and_(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now),
            ),
        )
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=now + lease,
            attempts=Delivery.attempts + 1,
            next_attempt_at=None,
            dispatched_at=None,  # picked up: no longer waiting in a queue
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    claimed = sorted(session.scalars(stmt))
    session.commit()
    return claimed


def _load(session: Session, ids: list[int]) -> list[_Row]:
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.edition_id,
            Delivery.variant_key,
            Delivery.attempts,
            Subscriber.email,
            Subscriber.status,
            Subscriber.token_version,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    return [_Row(*row) for row in rows]


class _Ledger:
    """Row updates; each is committed at once (the ledger must never lag the wire)."""

    def __init__(self, session: Session, policy: SendPolicy, clock: Clock) -> None:
        self.session, self.policy, self.clock = session, policy, clock

    def _set(self, delivery_id: int, **values: object) -> None:
        self.session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        self.session.commit()

    def sent(self, row: _Row, message_id: str) -> None:
        self._set(
            row.id,
            status=DeliveryStatus.SENT,
            sent_at=self.clock(),
            lease_until=None,
            message_id=message_id,
            last_error=None,
        )

    def skipped(self, row: _Row, reason: str) -> None:
        self._set(row.id, status=DeliveryStatus.SKIPPED, lease_until=None, last_error=reason)

    def transient(self, row: _Row, error: Exception) -> bool:
        """Schedule a retry, or fail the row past max attempts. True if it will retry."""
        if row.attempts >= self.policy.max_attempts:
            self._set(
                row.id,
                status=DeliveryStatus.FAILED,
                lease_until=None,
                last_error=f"gave up after {row.attempts} attempts: {error}"[:1000],
            )
            return False
        self._set(
            row.id,
            status=DeliveryStatus.RETRY,
            lease_until=None,
            dispatched_at=None,
            next_attempt_at=self.clock() + self.policy.backoff(row.attempts),
            last_error=str(error)[:1000],
        )
        return True

    def permanent(self, row: _Row, error: Exception) -> None:
        self.session.execute(
            update(Subscriber)
            .where(Subscriber.id == row.subscriber_id)
            .values(bounce_count=Subscriber.bounce_count + 1)
            .execution_options(synchronize_session=False)
        )
        self.session.execute(
            update(Subscriber)
            .where(
                Subscriber.id == row.subscriber_id,
                Subscriber.bounce_count >= self.policy.bounce_threshold,
                Subscriber.status == SubscriberStatus.ACTIVE,
            )
            .values(status=SubscriberStatus.SUPPRESSED)
            .execution_options(synchronize_session=False)
        )
        self._set(
            row.id,
            status=DeliveryStatus.FAILED,
            lease_until=None,
            last_error=f"bounced: {error}"[:1000],
        )

    def release(self, ids: list[int]) -> None:
        """Hand claimed-but-unsent rows back (pause): as if never claimed."""
        if ids:
            self.session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.SENDING)
                .values(
                    status=DeliveryStatus.PENDING,
                    lease_until=None,
                    dispatched_at=None,
                    attempts=Delivery.attempts - 1,
                )
                .execution_options(synchronize_session=False)
            )
            self.session.commit()


def send_batch(
    session: Session,
    *,
    delivery_ids: Sequence[int],
    backend: MailBackend,
    templates: TemplateSource,
    limiter: RateLimiter,
    links: Links,
    identity: Identity,
    policy: SendPolicy,
    clock: Clock,
    paused: Callable[[], bool] = lambda: False,
) -> BatchReport:
    report = BatchReport()
    if paused():
        report.paused = True
        return report
    claimed_at = clock()
    lease = dt.timedelta(seconds=policy.lease_seconds)
    ids = claim(session, ids=delivery_ids, now=claimed_at, lease=lease)
    report.claimed = len(ids)
    if not ids:
        return report
    rows = _load(session, ids)
    editions = {
        e.id: e
        for e in session.scalars(
            select(Edition).where(Edition.id.in_({r.edition_id for r in rows}))
        )
    }
    ledger = _Ledger(session, policy, clock)
    deadline = claimed_at + lease - LEASE_MARGIN
    with closing(backend.open()) as connection:
        for index, row in enumerate(rows):
            if index % PAUSE_CHECK_EVERY == 0 and index and paused():
                report.paused = True
            if report.paused or clock() >= deadline:
                remaining = [r.id for r in rows[index:]]
                if report.paused:
                    ledger.release(remaining)
                    report.released = len(remaining)
                else:
                    log.warning("batch passed its lease; %d rows left for reclaim", len(remaining))
                break
            _send_one(
                row,
                connection=connection,
                ledger=ledger,
                report=report,
                editions=editions,
                session=session,
                templates=templates,
                limiter=limiter,
                links=links,
                identity=identity,
            )
    return report


def _send_one(
    row: _Row,
    *,
    connection: MailConnection,
    ledger: _Ledger,
    report: BatchReport,
    editions: dict[int, Edition],
    session: Session,
    templates: TemplateSource,
    limiter: RateLimiter,
    links: Links,
    identity: Identity,
) -> None:
    if row.subscriber_status is not SubscriberStatus.ACTIVE:
        ledger.skipped(row, f"subscriber is {row.subscriber_status.value}")
        report.skipped += 1
        return
    edition = editions[row.edition_id]
    message_id = make_message_id(
        domain=identity.domain, edition_id=row.edition_id, delivery_id=row.id
    )
    try:
        template = templates.get(session, row.variant_key, edition=edition)
        unsubscribe_url = links.unsubscribe(row.subscriber_id, row.token_version)
        data = template.render(
            to=row.email,
            message_id=message_id,
            date=ledger.clock(),
            unsubscribe_url=unsubscribe_url,
            values={
                "email": row.email,
                "unsubscribe_url": unsubscribe_url,
                "preferences_url": links.preferences(row.subscriber_id, row.token_version),
            },
        )
        limiter.acquire()
        connection.send(
            OutgoingMessage(
                sender=identity.envelope_from, recipient=row.email, data=data, message_id=message_id
            )
        )
    except PermanentError as error:
        log.warning("delivery %s bounced: %s", row.id, error)
        ledger.permanent(row, error)
        report.failed += 1
    except Exception as error:  # transient, or a bug/bad data: must not sink the batch
        if isinstance(error, TransientError | DeliveryError):
            log.info("delivery %s will retry: %s", row.id, error)
        else:
            log.exception("delivery %s failed unexpectedly", row.id)
        if ledger.transient(row, error):
            report.retried += 1
        else:
            report.failed += 1
    else:
        ledger.sent(row, message_id)
        report.sent += 1
