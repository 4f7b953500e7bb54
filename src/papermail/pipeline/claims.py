"""The ledger rows a send batch works on: claim and read them, mark them, hand them back.

A ``deliveries`` row is the truth about one planned message. A batch *claims* its rows
with one conditional UPDATE (pending/retry, or sending with an expired lease ->
sending), so two workers handed the same ids never both send. Each outcome is then
marked on the row at once, each mark its own transaction (``RowOutcomes``); rows the batch
does not get to are released, as if never claimed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, cast

from sqlalchemy import Connection, Engine, TextClause, and_, bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from papermail.bounces.events import store_session_bounce
from papermail.clock import Clock
from papermail.db import on_postgres
from papermail.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus, UTCDateTime
from papermail.pipeline.ledger import STILL_SENDING, PipelinedSentMarks
from papermail.subscribers.bounces import BouncePolicy


@dataclass(frozen=True, slots=True)
class Row:
    """A claimed row, with what sending needs of its subscriber."""

    id: int
    subscriber_id: int
    edition_id: int
    variant_key: str
    attempts: int  # this attempt included
    email: str
    subscriber_status: SubscriberStatus
    token_version: int
    message_id: str | None  # set by an operator's resend; else made from the ids


_LOADED = (
    Delivery.id,
    Delivery.subscriber_id,
    Delivery.edition_id,
    Delivery.variant_key,
    Delivery.attempts,
    Delivery.message_id,
)


def claim(
    session: Session, *, ids: Sequence[int], now: dt.datetime, lease: dt.timedelta
) -> list[int]:
    """Atomically take the claimable rows among ``ids``; commits."""
    return [d.id for d in _claim(session, ids, now, lease)]


def claim_rows(
    session: Session, *, ids: Sequence[int], now: dt.datetime, lease: dt.timedelta
) -> list[Row]:
    """``claim``, returning the claimed rows in id order with what sending needs of their
    subscribers (a subscriber erased mid-flight takes their rows along)."""
    return _with_subscribers(session, _claim(session, ids, now, lease))


class _Claimed(NamedTuple):
    id: int
    subscriber_id: int
    edition_id: int
    variant_key: str
    attempts: int
    message_id: str | None


# On PostgreSQL each statement takes the batch's ids as one array parameter. As an IN list,
# a hundred ids were rendered into the SQL anew for every batch and parsed again by the
# driver: a tenth of a sending process's CPU, before the database did anything.
# PG_CLAIM is the claim a send batch runs (a test explains its plan).
PG_CLAIM = text(
    "UPDATE deliveries SET status = 'sending', lease_until = :lease_until,"
    " attempts = attempts + 1, next_attempt_at = NULL, dispatched_at = NULL"
    " WHERE id = ANY(CAST(:ids AS bigint[])) AND ("
    "(status IN ('pending', 'retry') AND (next_attempt_at IS NULL OR next_attempt_at <= :now))"
    " OR (status = 'sending' AND lease_until < :now))"
    " RETURNING id, subscriber_id, edition_id, variant_key, attempts, message_id"
).bindparams(bindparam("lease_until", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))
_PG_SUBSCRIBERS = text(
    "SELECT id, email, status, token_version FROM subscribers"
    " WHERE id = ANY(CAST(:ids AS bigint[]))"
)


def _claim(
    session: Session, ids: Sequence[int], now: dt.datetime, lease: dt.timedelta
) -> list[_Claimed]:
    if on_postgres(session):
        found = session.execute(
            PG_CLAIM, {"ids": list(ids), "now": now, "lease_until": now + lease}
        )
    else:
        found = session.execute(
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
            .returning(*_LOADED)
            .execution_options(synchronize_session=False)
        )
    claimed = sorted(map(_Claimed._make, found))  # by id: the first field, unique
    session.commit()
    return claimed


def _with_subscribers(session: Session, claimed: Sequence[_Claimed]) -> list[Row]:
    if not claimed:
        return []
    # Primary-key lookups rather than a join: with statistics that lag a bulk load,
    # PostgreSQL would hash-join the whole subscribers table for every batch.
    ids = list({d.subscriber_id for d in claimed})
    found = (
        session.execute(_PG_SUBSCRIBERS, {"ids": ids})
        if on_postgres(session)
        else session.execute(
            select(
                Subscriber.id, Subscriber.email, Subscriber.status, Subscriber.token_version
            ).where(Subscriber.id.in_(ids))
        )
    )
    typed = cast(Iterable[tuple[int, str, str, int]], found)
    people = {
        sid: (email, SubscriberStatus(status), version) for sid, email, status, version in typed
    }
    rows = []
    for d in claimed:
        if (person := people.get(d.subscriber_id)) is None:
            continue  # erased mid-flight: their rows went with them
        email, status, version = person
        rows.append(
            Row(
                id=d.id,
                subscriber_id=d.subscriber_id,
                edition_id=d.edition_id,
                variant_key=d.variant_key,
                attempts=d.attempts,
                email=email,
                subscriber_status=status,
                token_version=version,
                message_id=d.message_id,
            )
        )
    return rows


def no_longer_active(session: Session, rows: Sequence[Row]) -> dict[int, SubscriberStatus]:
    """Subscribers of ``rows`` who were active when loaded and are not any more."""
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


@contextmanager
def ledger_connection(session: Session, *, async_commit: bool) -> Iterator[Connection]:
    """A connection of the session's engine in autocommit mode, for the ledger marks."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.connect() as raw:
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


def _mark(assignments: str, *datetimes: str) -> TextClause:
    # ``assignments`` are this module's constants, never input.
    sql = f"UPDATE deliveries SET {assignments} WHERE id = :id AND {STILL_SENDING}"  # noqa: S608
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
_RELEASE = text(
    "UPDATE deliveries SET status = 'pending', lease_until = NULL, dispatched_at = NULL, "  # noqa: S608 (constants)
    f"next_attempt_at = :not_before, attempts = attempts - 1 WHERE id IN :ids AND {STILL_SENDING}"
).bindparams(bindparam("ids", expanding=True), bindparam("not_before", type_=UTCDateTime()))


class RowOutcomes:
    """Row updates on an autocommit connection, each its own transaction.

    On PostgreSQL a "sent" mark is pipelined (see ledger.py): it commits while the next
    message's envelope goes out, and ``settle()`` waits for it before that message's
    final "." and before any other statement here. Elsewhere (SQLite) a mark is durable
    the moment it returns. Either way the ledger never lags the wire by more than the
    one message whose 250 has just arrived.
    """

    def __init__(self, connection: Connection, *, clock: Clock, bounces: BouncePolicy) -> None:
        self.connection, self.clock, self.bounces = connection, clock, bounces
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

    def sent(self, row: Row, message_id: str) -> None:
        if self._marks is not None:
            self._marks.send(row.id, now=self.clock(), message_id=message_id)
            return
        self.connection.execute(
            _SENT, {"id": row.id, "now": self.clock(), "message_id": message_id}
        )

    def skipped(self, row: Row, reason: str) -> None:
        self.settle()
        self.connection.execute(_SKIPPED, {"id": row.id, "error": reason})

    def retry(self, row: Row, error: Exception, *, at: dt.datetime) -> None:
        self.settle()
        self.connection.execute(
            _RETRY, {"id": row.id, "error": str(error)[:1000], "next_attempt_at": at}
        )

    def failed(self, row: Row, why: str) -> None:
        self.settle()
        self.connection.execute(_FAILED, {"id": row.id, "error": why[:1000]})

    def bounced(self, row: Row, error: Exception) -> None:
        """Fail the row, then count the bounce (the bounce policy) only if that mark landed:
        a crash in between under-counts one bounce, never counts one twice."""
        # No begin() here: the connection autocommits (and has autobegun after the first
        # mark, so begin() raises).
        self.settle()
        failed = self.connection.execute(
            _FAILED, {"id": row.id, "error": f"bounced: {error}"[:1000]}
        )
        if failed.rowcount:
            # Only rows of active subscribers are sent (the others are skipped).
            self.bounces.record(self.connection, row.subscriber_id, sent_as=SubscriberStatus.ACTIVE)
            store_session_bounce(
                self.connection,
                subscriber_id=row.subscriber_id,
                delivery_id=row.id,
                recipient=row.email,
                error=error,
                now=self.clock(),
            )

    def release(self, ids: list[int], *, not_before: dt.datetime | None = None) -> None:
        """Hand claimed-but-unsent rows back, as if never claimed (no attempt spent)."""
        self.settle()
        if ids:
            self.connection.execute(_RELEASE, {"ids": ids, "not_before": not_before})
