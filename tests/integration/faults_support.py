"""Helpers for the delivery-under-faults tests (test_delivery_faults.py).

- ``RecordingSink``: the loopback SMTP sink, plus a timestamp and Message-ID per accepted
  message, and a way to freeze the server at end of DATA so a worker can be killed at a
  known point: just before the server accepts a message, or just after it did (while the
  worker still waits for the 250).
- ``RedispatchTicker``: publishes ``papermail.redispatch`` every second, as beat would.
- ``Ledger``: reads delivery statuses straight from PostgreSQL.
- ``Beat``: ``celery beat`` (RedBeat) as a child process.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from celery import Celery

from papermail_dev.smtpsink import SmtpSink
from tests.support.services import ROOT

SECRET = "faults-secret-key-0123456789abcdef0123456789"  # noqa: S105 (test only)
BASE_URL = "https://papers.example.org"
MAIL_FROM = "papermail <digest@papers.example.org>"
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def service_env(
    *, db_url: str, redis_url: str, sink: SmtpSink, var_dir: Path, **overrides: object
) -> dict[str, str]:
    """PAPERMAIL_* for workers under test: small leases and backoffs keep faults quick.

    ``overrides`` are Settings field names: ``send_rate_per_second=300``.
    """
    env = {
        "PAPERMAIL_DATABASE_URL": db_url,
        "PAPERMAIL_REDIS_URL": redis_url,
        "PAPERMAIL_SMTP_HOST": sink.host,
        "PAPERMAIL_SMTP_PORT": str(sink.port),
        # A 10 s lease needs a margin of 5 s at most: max(5, 4 x SMTP timeout), so 1.25 s
        # (plenty on loopback). Settings refuses a lease under twice the margin.
        "PAPERMAIL_SMTP_TIMEOUT": "1.25",
        "PAPERMAIL_BASE_URL": BASE_URL,
        "PAPERMAIL_MAIL_FROM": MAIL_FROM,
        "PAPERMAIL_SECRET_KEY": SECRET,
        "PAPERMAIL_VAR_DIR": str(var_dir),
        "PAPERMAIL_LEASE_SECONDS": "10",  # the minimum Settings allows (SIGKILLs recover fast)
        "PAPERMAIL_REDISPATCH_STALE_SECONDS": "3",
        "PAPERMAIL_RETRY_BASE_SECONDS": "0.2",
        "PAPERMAIL_MAX_ATTEMPTS": "30",
        "PAPERMAIL_BATCH_SIZE": "50",
    }
    env.update({f"PAPERMAIL_{key.upper()}": str(value) for key, value in overrides.items()})
    return env


# --- the SMTP side -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.monotonic() when the sink accepted the message
    recipient: str
    message_id: str


class HoldAt(enum.Enum):
    BEFORE_ACCEPT = "the whole message is in, the server has not accepted it"
    AFTER_ACCEPT = "the server accepted (counted) the message; its 250 is not sent yet"


class Hold:
    """One frozen end-of-DATA. The sink's loop thread waits here until ``release()``."""

    def __init__(self, where: HoldAt, skip: frozenset[str]) -> None:
        self.where, self.skip = where, skip
        self.recipient: str | None = None
        self.message_id: str | None = None
        self._reached = threading.Event()
        self._released = threading.Event()

    def wait_reached(self, timeout: float) -> None:
        if not self._reached.wait(timeout):
            raise AssertionError(f"no message reached end of DATA within {timeout}s")

    def release(self) -> None:
        self._released.set()

    def _catch(self, recipient: str, message_id: str) -> None:
        self.recipient, self.message_id = recipient, message_id
        self._reached.set()
        self._released.wait(60)  # blocks the sink (the test kills the client meanwhile)


class RecordingSink(SmtpSink):
    """``SmtpSink`` that timestamps every accepted message and can hold one at end of DATA.

    Only ``_accept`` is overridden: it is what the sink calls, on its loop thread, once a
    message is complete and no fault applies; the 250 goes out after it returns.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(keep_messages=True, **kwargs)  # type: ignore[arg-type]
        self._arrivals: list[Arrival] = []
        self._hold: Hold | None = None

    def hold_next(self, where: HoldAt, *, skip: Iterable[str | None] = ()) -> Hold:
        """Freeze the sink at the next end of DATA of a message to anyone not in ``skip``.

        The sink's loop stops while it holds: meant for one SMTP client at a time.
        """
        self._hold = hold = Hold(where, frozenset(r for r in skip if r))
        return hold

    @property
    def arrivals(self) -> list[Arrival]:
        return list(self._arrivals)  # appended on the loop thread only

    def message_ids(self, recipient: str) -> list[str]:
        return [a.message_id for a in self.arrivals if a.recipient == recipient]

    def duplicates(self) -> dict[str, list[str]]:
        """recipient -> the Message-IDs of every copy, for recipients with more than one."""
        copies: dict[str, list[str]] = {}
        for arrival in self.arrivals:
            copies.setdefault(arrival.recipient, []).append(arrival.message_id)
        return {rcpt: ids for rcpt, ids in copies.items() if len(ids) > 1}

    def stop(self) -> None:
        hold = self._hold
        if hold is not None:
            hold.release()
        super().stop()

    def _accept(self, mail_from: str, rcpt_tos: list[str], data: bytes | None, size: int) -> None:
        found = _MESSAGE_ID.search((data or b"").split(b"\r\n\r\n", 1)[0])
        message_id = found.group(1).decode() if found else "?"
        hold = self._hold
        if hold is not None and hold.skip.isdisjoint(rcpt_tos):
            self._hold = None
        else:
            hold = None
        if hold is not None and hold.where is HoldAt.BEFORE_ACCEPT:
            hold._catch(rcpt_tos[0], message_id)
            # The client was killed meanwhile. Drop its connection so the 250 that
            # step_data is about to return never goes anywhere: never accepted.
            for session in list(self._sessions):
                session.abort()
            return
        now = time.monotonic()
        for recipient in rcpt_tos:
            self._arrivals.append(Arrival(now, recipient, message_id))
        super()._accept(mail_from, rcpt_tos, None, size)  # count it; keep no bytes
        if hold is not None:
            hold._catch(rcpt_tos[0], message_id)


# --- beat's part -------------------------------------------------------------------------------


class RedispatchTicker:
    """Publish ``papermail.redispatch`` every ``interval`` seconds, as beat's schedule does.

    Publishing errors (the broker is down) are counted and the ticker carries on.
    """

    def __init__(
        self,
        app: Celery,
        *,
        interval: float = 1.0,
        before_tick: Callable[[], object] = lambda: None,
    ) -> None:
        self.app, self.interval, self.before_tick = app, interval, before_tick
        self.published = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redispatch-ticker", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.before_tick()
                self.app.send_task("papermail.redispatch")
                self.published += 1
            except Exception:  # noqa: BLE001 (broker down: beat would log and tick again)
                self.failures += 1

    def __enter__(self) -> RedispatchTicker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class Beat:
    """``celery -A workers.celery_app beat`` (RedBeat) as a child process, logging to a file."""

    def __init__(self, env: dict[str, str], *, log_path: Path, max_interval: int) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.max_interval = max_interval
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Beat:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers.celery_app",
                    "beat",
                    "--loglevel=DEBUG",
                    f"--max-interval={self.max_interval}",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def queued_tasks(client, queue: str) -> list[tuple[str, int | None]]:  # type: ignore[no-untyped-def]
    """(task name, publishing pid) for every message waiting in a kombu Redis queue.

    Celery stamps each message's headers with ``task`` and ``origin`` ("gen<pid>@host").
    """
    found = []
    for raw in client.lrange(queue, 0, -1):
        headers = json.loads(raw)["headers"]
        origin = re.match(r"gen(\d+)@", headers.get("origin") or "")
        found.append((headers["task"], int(origin.group(1)) if origin else None))
    return found


# --- the ledger --------------------------------------------------------------------------------


class Ledger:
    """Delivery rows read straight from PostgreSQL (no ORM, no caching)."""

    def __init__(self, db_url: str) -> None:
        self.conn = psycopg.connect(
            db_url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True
        )

    def statuses(self, edition_id: int | None = None) -> Counter[str]:
        sql = "SELECT status, count(*) FROM deliveries"
        params: tuple[object, ...] = ()
        if edition_id is not None:
            sql += " WHERE edition_id = %s"
            params = (edition_id,)
        return Counter(dict(self.conn.execute(sql + " GROUP BY status", params).fetchall()))

    def sent(self) -> int:
        return self.statuses()["sent"]

    def rows(self, edition_id: int) -> dict[str, tuple[str, int, str | None]]:
        """email -> (status, attempts, last_error) for one edition."""
        return {
            email: (status, attempts, error)
            for email, status, attempts, error in self.conn.execute(
                "SELECT s.email, d.status, d.attempts, d.last_error FROM deliveries d "
                "JOIN subscribers s ON s.id = d.subscriber_id WHERE d.edition_id = %s",
                (edition_id,),
            )
        }

    def subscribers(self) -> dict[str, tuple[str, int]]:
        """email -> (status, bounce_count)."""
        return {
            email: (status, bounces)
            for email, status, bounces in self.conn.execute(
                "SELECT email, status, bounce_count FROM subscribers"
            )
        }

    def retried_rows(self) -> int:
        """Rows that took more than one attempt."""
        row = self.conn.execute("SELECT count(*) FROM deliveries WHERE attempts > 1").fetchone()
        return int(row[0]) if row else 0

    def hurry_retries(self, *, max_seconds: float) -> None:
        """Bring every scheduled retry forward to at most ``max_seconds`` from now."""
        self.conn.execute(
            "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => %s) "
            "WHERE status = 'retry' AND next_attempt_at > now() + make_interval(secs => %s)",
            (max_seconds, max_seconds),
        )

    def finished_runs(self, stage: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM job_runs WHERE stage = %s AND finished_at IS NOT NULL", (stage,)
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


@dataclass
class Progress:
    """What a stuck run looked like, for the assertion message."""

    ledger: Ledger
    sink: RecordingSink
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def __str__(self) -> str:
        seconds = time.monotonic() - self.started
        return (
            f"after {seconds:.0f}s: ledger {dict(self.ledger.statuses())}, "
            f"sink {self.sink.total} messages to {len(self.sink.received)} recipients"
        )


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name}: no log)"
    last = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path.name} ---\n" + "\n".join(last)


def logs(directory: Path) -> Iterator[str]:
    for path in sorted(directory.glob("*.log")):
        yield tail(path)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
