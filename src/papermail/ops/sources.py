"""Each paper source's health, read from the ingest journal (``JobRun`` rows, stage "ingest").

Every ingest run leaves one row whose ``detail["source"]`` names where it fetched from:
"hf" (Hugging Face Daily Papers; rows from before arXiv was added carry no source, and
count as "hf"), "arxiv", or some other name for papers stored another way (the bundled
sample), which is its own source but not a scheduled one.

A source is alerted on when it has been failing for more than a day: its newest finished
attempt failed, and so did every attempt since one that failed more than 24 hours ago with
no success after it; or when it never succeeded (within ``LOOKBACK``) but has failed. The
day counts from the first failure, not from the last success: arXiv is fetched on weekdays
only, so Monday's fetch comes three days after Friday's success, and one failed Monday
fetch is not a source failing for days. A source never tried gets no alert:
it may simply not be scheduled. A run still going (``ok`` is None, which also covers one
that died without finishing) is shown as the last attempt, but the alert looks at the newest
*finished* attempt, so it neither flickers off while a retry runs nor waits forever on a run
that died.

The journal's JSON is filtered here, in Python, over a bounded read: the ingest rows of the
last ``LOOKBACK`` (at most ``MAX_RUNS``), newest first, stopping as soon as every source asked
about has its newest success. JSON operators differ between SQLite and PostgreSQL; this
does not depend on them.

Errors come from upstream answers, so they are untrusted: they stay data here (a one-line
excerpt, control characters replaced) and each shell escapes them for its medium.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import JobRun
from papermail.ops.phrasing import ago

log = logging.getLogger(__name__)

SCHEDULED_SOURCES = ("hf", "arxiv")  # workers/celery_app.py's beat schedule fetches these
DEFAULT_SOURCE = "hf"  # what an ingest row without a source fetched from
LOOKBACK = dt.timedelta(days=14)  # how far back the journal is read
MAX_RUNS = 5000  # 14 days of half-hourly HF ingests and their retries is ~700 rows
ALERT_AFTER = dt.timedelta(days=1)  # failing for longer than this is an alert
ERROR_EXCERPT = 200  # characters of an upstream error shown to operators
_CHUNK = 200  # rows fetched at a time while scanning newest first


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One source as operators see it.

    ``accepted`` and ``rejected`` describe the last successful run: ``accepted`` is
    ``inserted + updated``, the papers it wrote (new or refreshed). That equals the journal's
    ``fetched``, which already counts only papers that passed validation; ``rejected`` counts
    the items that did not. Both are None with no success in the lookback.
    """

    source: str
    last_attempt_at: dt.datetime | None  # None: never fetched (within LOOKBACK)
    last_attempt_ok: bool | None  # None: never fetched, or still running (or died)
    last_error: str | None  # excerpt of the newest finished attempt's error, if it failed
    last_success_at: dt.datetime | None
    accepted: int | None
    rejected: int | None
    lag: dt.timedelta | None  # now - last success
    failures: int  # failed attempts since the last success (or within LOOKBACK, if none)
    alert: str | None

    @property
    def state(self) -> str:
        """One word for the row: never fetched, running, ok, failing, or alert."""
        if self.alert:
            return "alert"
        if self.last_attempt_at is None:
            return "never fetched"
        if self.last_attempt_ok is None:
            return "running"
        return "ok" if self.last_attempt_ok else "failing"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (datetimes as ISO 8601, the lag in seconds)."""
        return {
            "source": self.source,
            "state": self.state,
            "last_attempt_at": _iso(self.last_attempt_at),
            "last_attempt_ok": self.last_attempt_ok,
            "last_error": self.last_error,
            "last_success_at": _iso(self.last_success_at),
            "accepted": self.accepted,
            "rejected": self.rejected,
            "lag_seconds": self.lag.total_seconds() if self.lag is not None else None,
            "failures": self.failures,
            "alert": self.alert,
        }


@dataclass(frozen=True, slots=True)
class _Run:
    started_at: dt.datetime
    finished_at: dt.datetime | None
    ok: bool | None
    detail: Mapping[str, Any]


class _Scan:
    """What the newest-first scan has learned about one source so far."""

    def __init__(self) -> None:
        self.newest: _Run | None = None
        self.newest_finished: _Run | None = None
        self.success: _Run | None = None
        self.failures = 0
        self.first_failure: _Run | None = None  # the oldest failure after the newest success

    def see(self, run: _Run) -> None:
        if self.success is not None:
            return  # older than the newest success: nothing more to learn
        self.newest = self.newest or run
        if run.ok is None:
            return
        self.newest_finished = self.newest_finished or run
        if run.ok:
            self.success = run
        else:
            self.failures += 1
            self.first_failure = run  # newest first: each one seen is older


def source_health(
    session: Session, *, now: dt.datetime, sources: Sequence[str] = SCHEDULED_SOURCES
) -> list[SourceHealth]:
    """Each of ``sources``, in that order, from the ingest runs of the last ``LOOKBACK``."""
    scans = {source: _Scan() for source in sources}
    stmt = (
        select(JobRun.started_at, JobRun.finished_at, JobRun.ok, JobRun.detail)
        .where(JobRun.stage == "ingest", JobRun.started_at >= now - LOOKBACK)
        .order_by(JobRun.started_at.desc(), JobRun.id.desc())
        .limit(MAX_RUNS)
        .execution_options(yield_per=_CHUNK)
    )
    result = session.execute(stmt)
    try:
        for row in result:
            details = row.detail if isinstance(row.detail, Mapping) else {}
            scan = scans.get(source_of(details))
            if scan is not None:
                scan.see(_Run(row.started_at, row.finished_at, row.ok, details))
                if all(s.success is not None for s in scans.values()):
                    break
    finally:
        result.close()
    return [_health(source, scan, now=now) for source, scan in scans.items()]


def read_source_health(
    sessions: sessionmaker[Session],
    *,
    now: dt.datetime,
    sources: Sequence[str] = SCHEDULED_SOURCES,
) -> tuple[SourceHealth, ...] | None:
    """``source_health`` in a session of its own; None when the database did not answer
    (logged), since the status views are most needed when something is down."""
    try:
        with sessions() as session:
            return tuple(source_health(session, now=now, sources=sources))
    except Exception as exc:  # SQLAlchemyError, or a driver error while connecting
        log.warning("could not read the sources' health: %s: %s", type(exc).__name__, exc)
        return None


def source_of(detail: Mapping[str, Any]) -> str:
    """The source an ingest row fetched from; a row without one is from before arXiv."""
    source = detail.get("source")
    return str(source) if source else DEFAULT_SOURCE


def span(delta: dt.timedelta | None) -> str:
    """A duration for people: "45s", "12m", "3h 5m", "2d 4h"; "-" when unknown."""
    if delta is None:
        return "-"
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{seconds}s"


def excerpt(text: object, width: int = ERROR_EXCERPT) -> str:
    """Untrusted text as one short line: control characters (a terminal's escape
    sequences among them) become spaces, runs of spaces one. Nothing is escaped here."""
    printable = "".join(c if c.isprintable() else " " for c in str(text))
    line = " ".join(printable.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _health(source: str, scan: _Scan, *, now: dt.datetime) -> SourceHealth:
    success = scan.success
    success_at = (success.finished_at or success.started_at) if success else None
    failed = scan.newest_finished if scan.newest_finished and not scan.newest_finished.ok else None
    return SourceHealth(
        source=source,
        last_attempt_at=scan.newest.started_at if scan.newest else None,
        last_attempt_ok=scan.newest.ok if scan.newest else None,
        last_error=excerpt(failed.detail.get("error") or "unknown error") if failed else None,
        last_success_at=success_at,
        accepted=_accepted(success.detail) if success else None,
        rejected=_count(success.detail, "rejected") if success else None,
        lag=now - success_at if success_at else None,
        failures=scan.failures,
        alert=_alert(scan, success_at, now=now) if failed else None,
    )


def _alert(scan: _Scan, success_at: dt.datetime | None, *, now: dt.datetime) -> str | None:
    """Called when the newest finished attempt failed (so there is a first failure)."""
    attempts = f"{scan.failures} failed attempt{'' if scan.failures == 1 else 's'}"
    if success_at is None:
        return f"no successful fetch in the last {LOOKBACK.days} days ({attempts})"
    assert scan.first_failure is not None
    if now - scan.first_failure.started_at <= ALERT_AFTER:
        return None
    return (
        f"failing for over a day: last success {ago(success_at, now)} "
        f"({success_at:%Y-%m-%d %H:%M} UTC), {attempts} since"
    )


def _accepted(detail: Mapping[str, Any]) -> int | None:
    inserted, updated = _count(detail, "inserted"), _count(detail, "updated")
    if inserted is None and updated is None:
        return _count(detail, "fetched")  # a row written before inserted/updated were kept
    return (inserted or 0) + (updated or 0)


def _count(detail: Mapping[str, Any], key: str) -> int | None:
    value = detail.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
