"""PostgreSQL "sent" marks that commit while the next message is on its way.

A durable mark waits for a WAL flush. Waiting for it before doing anything else
left a worker idle for that flush on every message: the same CPU per email sent a
third more mail once the database stopped waiting for the disk. Here the mark is
sent with libpq's asynchronous API and its result collected later, by ``settle()``,
which the send loop calls right before the *next* message's final "." (and before
any other use of the connection). So at any moment at most one message is past the
server's 250 without a committed mark: the duplicate window stays one message wide.
"""

from __future__ import annotations

import datetime as dt
import select

import psycopg
from psycopg import pq

# "The row is still in flight", written so that PostgreSQL reaches the row by its primary
# key. Statistics never see 'sending' (a row passes through it within seconds, between two
# ANALYZEs), so PostgreSQL found the status index as selective as the key and took it:
# each mark read every row still in 'sending' (about 60 index entries a message in a
# bench, not one). An IS TRUE test is no index's condition; status is never NULL, so it
# means the same.
STILL_SENDING = "(status = 'sending') IS TRUE"

_NAME = b"papermail_mark_sent"
MARK_SENT_SQL = (
    b"UPDATE deliveries SET status = 'sent', sent_at = $1, lease_until = NULL, "
    b"message_id = $2, last_error = NULL WHERE id = $3 AND " + STILL_SENDING.encode()
)
_IS_PREPARED = b"SELECT 1 FROM pg_prepared_statements WHERE name = 'papermail_mark_sent'"
# A commit normally takes well under a millisecond; past this the database is gone for us.
SETTLE_TIMEOUT_SECONDS = 60.0


class LedgerError(Exception):
    """A "sent" mark did not commit: the batch must stop (its message is in the window)."""


class PipelinedSentMarks:
    """Send a mark now, learn that it committed later; one mark in flight at most."""

    def __init__(
        self,
        connection: psycopg.Connection,
        *,
        timeout: float = SETTLE_TIMEOUT_SECONDS,
    ) -> None:
        self._pg = connection.pgconn
        self._timeout = timeout
        self._pending: int | None = None  # delivery id whose mark is in flight
        try:
            # Asked of the server, once a batch: the pool hands connections back and
            # forth, and psycopg sends DEALLOCATE ALL after a ROLLBACK on a connection
            # where it prepared statements of its own, so no client-side flag can tell.
            found = self._pg.exec_(_IS_PREPARED)
            if found.status != pq.ExecStatus.TUPLES_OK:
                raise LedgerError(f"cannot look up the sent mark: {_error(found)}")
            if found.ntuples:
                return
            prepared = self._pg.prepare(_NAME, MARK_SENT_SQL)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot prepare the sent mark: {exc}") from exc
        if prepared.status != pq.ExecStatus.COMMAND_OK:
            raise LedgerError(f"cannot prepare the sent mark: {_error(prepared)}")

    @property
    def in_flight(self) -> bool:
        return self._pending is not None

    def send(self, delivery_id: int, *, now: dt.datetime, message_id: str) -> None:
        """Put the mark on the wire without waiting; settles the previous one first."""
        self.settle()
        params = [now.isoformat().encode(), message_id.encode(), str(delivery_id).encode()]
        try:
            self._pg.send_query_prepared(_NAME, params)
            self._pending = delivery_id
            while self._pg.flush():  # nonblocking libpq: the rest waits for socket space
                self._wait(write=True)
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot send the sent mark of delivery {delivery_id}: {exc}"
            ) from exc

    def settle(self) -> None:
        """Wait until the mark in flight (if any) has committed; raise if it did not."""
        if self._pending is None:
            return
        delivery_id = self._pending
        try:
            self._pg.consume_input()
            while self._pg.is_busy():
                self._wait(write=False)
                self._pg.consume_input()
            result = self._pg.get_result()
            while self._pg.get_result() is not None:  # up to the end-of-query marker
                pass
        except psycopg.Error as exc:
            raise LedgerError(f"the sent mark of delivery {delivery_id} was lost: {exc}") from exc
        self._pending = None
        if result is None or result.status != pq.ExecStatus.COMMAND_OK:
            why = _error(result) if result is not None else self._pg.error_message.decode()
            raise LedgerError(f"the sent mark of delivery {delivery_id} did not commit: {why}")

    def _wait(self, *, write: bool) -> None:
        socket = self._pg.socket
        ready = (
            select.select([], [socket], [], self._timeout)
            if write
            else select.select([socket], [], [], self._timeout)
        )
        if not any(ready):
            raise LedgerError(f"no answer from the database in {self._timeout:.0f} s")


def _error(result: pq.abc.PGresult) -> str:
    return result.error_message.decode("utf-8", "replace").strip()
