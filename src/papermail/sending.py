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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, TextClause, and_, bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from papermail.delivery.base import (
    BackendUnavailable,
    DeliveryError,
    MailBackend,
    MailConnection,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from papermail.logging_setup import log_context
from papermail.messages import make_message_id
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    UTCDateTime,
)
from papermail.pgmarks import LedgerError, PipelinedSentMarks
from papermail.ratelimit import RateLimiter
from papermail.tokens import Links
from papermail.variants import Identity, TemplateSource

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
PAUSE_CHECK_EVERY = 10  # messages; a pause takes effect within this many sends
# Unsubscribes mid-batch: a database round trip, so less often (a batch lasts ~1 s).
STATUS_CHECK_EVERY = 25


@dataclass(frozen=True, slots=True)
class SendPolicy:
    max_attempts: int = 5
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 6 * 3600.0
    bounce_threshold: int = 3
    lease_seconds: int = 300
    # PostgreSQL only. True: a "sent" mark is acknowledged before it reaches disk, so a
    # crash of the database server (not of a worker) can forget the last ~0.6 s of marks
    # and those messages are sent again. Never a loss; about 3x less database work a mark.
    ledger_async_commit: bool = False
    # Stop this long before the lease ends: at least one slow SMTP exchange (several
    # timeouts' worth), so no message can still be in flight when the row is reclaimed.
    lease_margin_seconds: float = 30.0

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
    backend_down: bool = False  # the relay refused us as a whole; the rest was released
    coordination_down: bool = False  # Redis (rate limit, pause flag) failed; rest released

    @property
    def stopping(self) -> bool:
        """Stop now and hand the unsent rows back for another batch."""
        return self.paused or self.backend_down or self.coordination_down


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
    message_id: str | None


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


@contextmanager
def _ledger_connection(session: Session, *, async_commit: bool) -> Iterator[Connection]:
    """A connection of the session's engine in autocommit mode, for the ledger marks."""
    with session.get_bind().connect() as raw:
        connection = raw.execution_options(isolation_level="AUTOCOMMIT")
        relaxed = async_commit and connection.dialect.name == "postgresql"
        if relaxed:
            connection.exec_driver_sql("SET synchronous_commit TO off")
        try:
            yield connection
        finally:
            if relaxed and not connection.invalidated:
                # The connection goes back to the pool: nothing else may inherit this.
                connection.exec_driver_sql("SET synchronous_commit TO DEFAULT")


def _load(session: Session, ids: list[int]) -> list[_Row]:
    # Two primary-key lookups rather than a join: with statistics that lag a bulk load,
    # PostgreSQL would hash-join the whole subscribers table for every batch.
    deliveries = session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.edition_id,
            Delivery.variant_key,
            Delivery.attempts,
            Delivery.message_id,
        )
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    ).all()
    people = {
        row.id: row
        for row in session.execute(
            select(
                Subscriber.id, Subscriber.email, Subscriber.status, Subscriber.token_version
            ).where(Subscriber.id.in_({d.subscriber_id for d in deliveries}))
        )
    }
    return [
        _Row(
            id=d.id,
            subscriber_id=d.subscriber_id,
            edition_id=d.edition_id,
            variant_key=d.variant_key,
            attempts=d.attempts,
            email=people[d.subscriber_id].email,
            subscriber_status=people[d.subscriber_id].status,
            token_version=people[d.subscriber_id].token_version,
            message_id=d.message_id,
        )
        for d in deliveries
        if d.subscriber_id in people  # erased mid-flight: their rows went with them
    ]


def _mark(assignments: str, *datetimes: str) -> TextClause:
    # ``assignments`` are this module's constants, never input.
    sql = f"UPDATE deliveries SET {assignments} WHERE id = :id AND status = 'sending'"  # noqa: S608
    stmt = text(sql)
    return stmt.bindparams(*(bindparam(name, type_=UTCDateTime()) for name in datetimes))


# Built once: each mark is one statement, one round trip, its own transaction.
_SENT = _mark(
    "status = 'sent', sent_at = :now, lease_until = NULL, message_id = :message_id, "
    "last_error = NULL",
    "now",
)
_SKIPPED = _mark("status = 'skipped', lease_until = NULL, last_error = :error")
_FAILED = _mark("status = 'failed', lease_until = NULL, last_error = :error")
_RETRY = _mark(
    "status = 'retry', lease_until = NULL, dispatched_at = NULL, "
    "next_attempt_at = :next_attempt_at, last_error = :error",
    "next_attempt_at",
)
_BOUNCE = text("UPDATE subscribers SET bounce_count = bounce_count + 1 WHERE id = :sid")
_SUPPRESS = text(
    "UPDATE subscribers SET status = 'suppressed' WHERE id = :sid "
    "AND bounce_count >= :threshold AND status = 'active'"
)
_RELEASE = text(
    "UPDATE deliveries SET status = 'pending', lease_until = NULL, dispatched_at = NULL, "
    "next_attempt_at = :not_before, attempts = attempts - 1 "
    "WHERE id IN :ids AND status = 'sending'"
).bindparams(bindparam("ids", expanding=True), bindparam("not_before", type_=UTCDateTime()))


class _Ledger:
    """Row updates on an autocommit connection, each its own transaction.

    On PostgreSQL a "sent" mark is pipelined (see pgmarks): it commits while the next
    message's envelope goes out, and ``settle()`` waits for it before that message's
    final "." and before any other statement here. Elsewhere (SQLite) a mark is durable
    the moment it returns. Either way the ledger never lags the wire by more than the
    one message whose 250 has just arrived.
    """

    def __init__(self, connection: Connection, policy: SendPolicy, clock: Clock) -> None:
        self.connection, self.policy, self.clock = connection, policy, clock
        self._marks = (
            PipelinedSentMarks(connection.connection.driver_connection)  # type: ignore[arg-type]
            if connection.dialect.name == "postgresql"
            else None
        )

    def settle(self) -> None:
        """Wait until the last "sent" mark has committed (raises LedgerError if not)."""
        if self._marks is not None:
            self._marks.settle()

    def abandon(self) -> None:
        """The batch is failing: never hand a connection with a mark in flight back to
        the pool (its next user would read our result). The server still commits it."""
        if self._marks is not None and self._marks.in_flight:
            self.connection.invalidate()

    def sent(self, row: _Row, message_id: str) -> None:
        if self._marks is not None:
            self._marks.send(row.id, now=self.clock(), message_id=message_id)
            return
        self.connection.execute(
            _SENT, {"id": row.id, "now": self.clock(), "message_id": message_id}
        )

    def skipped(self, row: _Row, reason: str) -> None:
        self.settle()
        self.connection.execute(_SKIPPED, {"id": row.id, "error": reason})

    def transient(self, row: _Row, error: Exception) -> bool:
        """Schedule a retry, or fail the row past max attempts. True if it will retry."""
        self.settle()
        if row.attempts >= self.policy.max_attempts:
            message = f"gave up after {row.attempts} attempts: {error}"
            self.connection.execute(_FAILED, {"id": row.id, "error": message[:1000]})
            return False
        self.connection.execute(
            _RETRY,
            {
                "id": row.id,
                "error": str(error)[:1000],
                "next_attempt_at": self.clock() + self.policy.backoff(row.attempts),
            },
        )
        return True

    def permanent(self, row: _Row, error: Exception) -> None:
        # No begin() here: the connection autocommits (and has autobegun after the first mark,
        # so begin() raises). Fail the row first and count the bounce only if that mark
        # landed: a crash in between under-counts one bounce, never counts one twice.
        self.settle()
        failed = self.connection.execute(
            _FAILED, {"id": row.id, "error": f"bounced: {error}"[:1000]}
        )
        if failed.rowcount:
            self.connection.execute(_BOUNCE, {"sid": row.subscriber_id})
            self.connection.execute(
                _SUPPRESS, {"sid": row.subscriber_id, "threshold": self.policy.bounce_threshold}
            )

    def release(self, ids: list[int], *, not_before: dt.datetime | None = None) -> None:
        """Hand claimed-but-unsent rows back, as if never claimed (no attempt spent)."""
        self.settle()
        if ids:
            self.connection.execute(_RELEASE, {"ids": ids, "not_before": not_before})


Observe = Callable[[str, float | None], None]  # (outcome, SMTP seconds) -> None


def _ignore(_outcome: str, _seconds: float | None) -> None:
    return None


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
    observe: Observe = _ignore,
) -> BatchReport:
    """Claim the rows among ``delivery_ids`` that are due, send each, record each.

    ``observe`` hears every message's outcome (sent, retry, failed, bounced, skipped)
    and its SMTP time, for metrics.
    """
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
    session.commit()
    # Half the lease at most: with the 10 s lease Settings allows, a full margin would put
    # the deadline before the claim and the batch would never send anything.
    margin = dt.timedelta(seconds=policy.lease_margin_seconds)
    deadline = claimed_at + lease - min(margin, lease / 2)
    with (
        closing(backend.open()) as connection,
        _ledger_connection(session, async_commit=policy.ledger_async_commit) as ledger_connection,
    ):
        ledger = _Ledger(ledger_connection, policy, clock)
        batch = _Batch(
            session=session,
            connection=connection,
            ledger=ledger,
            report=report,
            editions=editions,
            templates=templates,
            links=links,
            identity=identity,
            observe=observe,
        )
        try:
            _send_rows(rows, batch, limiter, paused, clock, deadline)
        except BaseException:
            ledger.abandon()
            raise
        ledger.settle()
    return report


def _send_rows(
    rows: list[_Row],
    batch: _Batch,
    limiter: RateLimiter,
    paused: Callable[[], bool],
    clock: Clock,
    deadline: dt.datetime,
) -> None:
    report = batch.report
    for index, row in enumerate(rows):
        try:
            if row.subscriber_status is SubscriberStatus.ACTIVE:
                # Wait for the shared rate limit first, so the pause and lease checks
                # below judge the moment this message would really go out.
                limiter.acquire()
            if index % PAUSE_CHECK_EVERY == 0 and index:
                report.paused = paused()
            if index % STATUS_CHECK_EVERY == 0 and index:
                # Someone who unsubscribed since the batch began gets nothing more.
                batch.left = _no_longer_active(batch.session, rows[index:])
        except Exception:  # the shared limiter / pause flag (Redis) is unreachable
            log.exception("rate limit or pause flag unavailable; handing the rest back")
            report.coordination_down = True
        if report.stopping or clock() >= deadline:
            batch.stop(rows[index:])
            break
        with log_context(
            delivery_id=row.id, subscriber_id=row.subscriber_id, edition_id=row.edition_id
        ):
            batch.send_one(row)


@dataclass
class _Batch:
    """What one batch's messages share while it runs."""

    session: Session
    connection: MailConnection
    ledger: _Ledger
    report: BatchReport
    editions: dict[int, Edition]
    templates: TemplateSource
    links: Links
    identity: Identity
    observe: Observe
    left: dict[int, SubscriberStatus] = field(default_factory=dict)  # status changed mid-batch

    def stop(self, remaining: Sequence[_Row]) -> None:
        """Hand every unsent row back without spending an attempt on it.

        Paused: they wait for resume. Relay or Redis down: they wait a retry interval
        first, so a long outage costs one connection attempt per batch per interval,
        not every row's attempts. Out of lease time: they go straight back (the lease
        is still ours, so nobody else has them yet).
        """
        ids = [r.id for r in remaining]
        not_before = None
        if self.report.backend_down or self.report.coordination_down:
            not_before = self.ledger.clock() + self.ledger.policy.backoff(1)
        elif not self.report.paused:
            log.warning("batch near the end of its lease; handing %d rows back", len(ids))
        self.ledger.release(ids, not_before=not_before)
        self.report.released += len(ids)

    def send_one(self, row: _Row) -> None:
        status = self.left.get(row.subscriber_id, row.subscriber_status)
        if status is not SubscriberStatus.ACTIVE:
            self.ledger.skipped(row, skip_reason(status))
            self.report.skipped += 1
            self.observe("skipped", None)
            return
        # Stable across retries (a receiver can drop a repeat); an operator resend set a new one.
        message_id = row.message_id or make_message_id(
            domain=self.identity.domain, edition_id=row.edition_id, delivery_id=row.id
        )
        started: float | None = None
        try:
            data = self._message(row, message_id)
            started = time.perf_counter()
            self.connection.send(
                OutgoingMessage(
                    sender=self.identity.envelope_from,
                    recipient=row.email,
                    data=data,
                    message_id=message_id,
                    dot_safe=True,  # MessageTemplate.render never starts a line with "."
                ),
                # The previous message's mark commits before this one can be accepted:
                # never two messages past their 250 without a committed mark.
                before_accept=self.ledger.settle,
            )
        except LedgerError:
            raise  # the previous message's mark, not this message: stop the batch
        except BackendUnavailable as error:
            # Nothing was sent: this row goes back with the rest of the batch (stop()).
            log.error("delivery backend unavailable, stopping the batch: %s", error)
            self.report.backend_down = True
            self.stop([row])
        except PermanentError as error:
            log.warning("delivery %s bounced: %s", row.id, error)
            self.ledger.permanent(row, error)
            self.report.failed += 1
            self.observe("bounced", _since(started))
        except Exception as error:  # transient, or a bug/bad data: must not sink the batch
            if isinstance(error, TransientError | DeliveryError):
                log.info("delivery %s will retry: %s", row.id, error)
            else:
                log.exception("delivery %s failed unexpectedly", row.id)
            self._retry_or_fail(row, error, _since(started))
        else:
            took = _since(started)
            self.ledger.sent(row, message_id)
            self.report.sent += 1
            self.observe("sent", took)

    def _message(self, row: _Row, message_id: str) -> bytes:
        template = self.templates.get(
            self.session, row.variant_key, edition=self.editions[row.edition_id]
        )
        unsubscribe_url = self.links.unsubscribe(row.subscriber_id, row.token_version)
        return template.render(
            to=row.email,
            message_id=message_id,
            date=self.ledger.clock(),
            unsubscribe_url=unsubscribe_url,
            values={
                "email": row.email,
                "unsubscribe_url": unsubscribe_url,
                "preferences_url": self.links.preferences(row.subscriber_id, row.token_version),
            },
        )

    def _retry_or_fail(self, row: _Row, error: Exception, took: float | None) -> None:
        if self.ledger.transient(row, error):
            self.report.retried += 1
            self.observe("retry", took)
        else:
            self.report.failed += 1
            self.observe("failed", took)


def _no_longer_active(session: Session, rows: Sequence[_Row]) -> dict[int, SubscriberStatus]:
    ids = {r.subscriber_id for r in rows if r.subscriber_status is SubscriberStatus.ACTIVE}
    if not ids:
        return {}
    # By primary key only, filtered here: "status <> 'active'" in SQL let PostgreSQL walk
    # the status index over every subscriber, ten times a batch (16% of a worker's time).
    found = session.execute(
        select(Subscriber.id, Subscriber.status).where(Subscriber.id.in_(ids))
    ).all()
    session.commit()  # end the read: a long batch must not hold a transaction open
    return {sid: status for sid, status in found if status is not SubscriberStatus.ACTIVE}


def skip_reason(status: SubscriberStatus) -> str:
    """What a skipped row's last_error says (monitoring splits "suppressed" out by it)."""
    return f"subscriber is {status.value}"


def _since(started: float | None) -> float | None:
    return None if started is None else time.perf_counter() - started
