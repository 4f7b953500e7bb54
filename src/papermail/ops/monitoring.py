"""What operators see: queues, workers, beat, stage runs, the delivery funnel, subscribers.

Every reader takes what it touches (a Redis client, a session, a Celery app) as an
argument, so the CLI, the /ops page and /metrics share one code path and tests can
hand in fakeredis and SQLite. ``take_snapshot`` gathers everything into one frozen
``Snapshot``; a source that does not answer becomes an entry in ``Snapshot.errors``
instead of an exception, because a dashboard is most needed when something is down.

This module holds the snapshot and its database counts. The broker's side (kombu's
queues, worker pings, RedBeat) is in ``ops.broker``, the 24-hour samples behind the
/ops charts in ``ops.history``, and the snapshot in words in ``ops.phrasing``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis as redis_lib
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    JobRun,
    Subscriber,
    SubscriberStatus,
)
from papermail.ops.bounce_rates import BounceWindow, last_24h
from papermail.ops.broker import (
    REDBEAT_LOCK_TIMEOUT,
    REDBEAT_PREFIX,
    BeatStatus,
    CeleryLike,
    QueueDepth,
    beat_status,
    queue_depths,
    workers_online,
)
from papermail.ops.control import pause_info
from papermail.ops.jobs import last_runs
from papermail.pipeline.sending import skip_reason

# QueueDepth and BeatStatus (parts of a Snapshot), CeleryLike and REDBEAT_LOCK_TIMEOUT
# (what take_snapshot takes) live in ops.broker; callers may name them from here too.

log = logging.getLogger(__name__)

STAGES = ("ingest", "edition", "planning")

# The funnel's columns, in the order a message moves through them. "suppressed" is the
# part of "skipped" whose subscriber had been suppressed (bounces), shown on its own.
FUNNEL = ("pending", "sending", "sent", "retry", "failed", "suppressed", "skipped")
SUPPRESSED_SKIP_REASON = skip_reason(SubscriberStatus.SUPPRESSED)
DELIVERY_STATUSES = tuple(s.value for s in DeliveryStatus)
BOUNCE_PREFIX = "bounced:"


@dataclass(frozen=True, slots=True)
class StageRun:
    stage: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    ok: bool | None  # None: still running (or died without finishing)
    detail: dict[str, Any]
    last_success_at: dt.datetime | None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: dt.datetime
    embedded: bool
    paused: str | None  # the pause note ("<when> <reason>") or None while sending
    queues: tuple[QueueDepth, ...] = ()
    workers: tuple[str, ...] | None = None  # None: not asked (embedded) or no answer
    beat: BeatStatus | None = None
    runs: tuple[StageRun, ...] = ()
    funnel: dict[str, int] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)  # all editions, not just today
    send_rate_5m: float = 0.0  # messages per minute
    send_rate_60m: float = 0.0
    bounces_today: int = 0
    subscribers: dict[str, int] = field(default_factory=dict)
    bounces_24h: BounceWindow | None = None  # late and in-session bounces, complaints
    errors: tuple[str, ...] = ()  # "redis: ConnectionError ..." for each source that failed

    def source_up(self, source: str) -> bool:
        return not any(e.startswith(f"{source}:") for e in self.errors)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (datetimes as ISO 8601 strings)."""
        data = asdict(self)
        data["queues"] = [dict(asdict(q), total=q.total) for q in self.queues]
        data["runs"] = [dict(asdict(r), duration_seconds=r.duration_seconds) for r in self.runs]
        if self.bounces_24h is not None:
            window = self.bounces_24h
            data["bounces_24h"] |= {
                "bounce_rate": window.bounce_rate,
                "complaint_rate": window.complaint_rate,
            }
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- database -------------------------------------------------------------------------------


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def funnel(session: Session, *, day: dt.date) -> dict[str, int]:
    """Deliveries planned on ``day`` (UTC) by where they are now; see FUNNEL."""
    start, end = day_bounds(day)
    suppressed = (Delivery.status == DeliveryStatus.SKIPPED) & (
        Delivery.last_error == SUPPRESSED_SKIP_REASON
    )
    rows = session.execute(
        select(Delivery.status, suppressed, func.count())
        .where(Delivery.created_at >= start, Delivery.created_at < end)
        .group_by(Delivery.status, suppressed)
    ).all()
    counts = dict.fromkeys(FUNNEL, 0)
    for status, is_suppressed, n in rows:
        counts["suppressed" if is_suppressed else DeliveryStatus(status).value] += n
    return counts


def bounces(session: Session, *, day: dt.date) -> int:
    """Deliveries planned on ``day`` that failed permanently (a 5xx from the server)."""
    start, end = day_bounds(day)
    return count_deliveries(
        session,
        Delivery.created_at >= start,
        Delivery.created_at < end,
        Delivery.status == DeliveryStatus.FAILED,
        Delivery.last_error.like(f"{BOUNCE_PREFIX}%"),
    )


def count_deliveries(session: Session, *where: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(Delivery).where(*where)) or 0


def backlog(session: Session) -> dict[str, int]:
    """Rows still to send, across every edition (what the send queue should drain)."""
    waiting = (DeliveryStatus.PENDING, DeliveryStatus.RETRY, DeliveryStatus.SENDING)
    rows = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.status.in_(waiting))
            .group_by(Delivery.status)
        ).all()
    )
    return {s.value: rows.get(s, 0) for s in waiting}


def send_rate(session: Session, *, now: dt.datetime, window: dt.timedelta) -> float:
    """Messages sent per minute over the ``window`` before ``now``."""
    sent = count_deliveries(
        session,
        Delivery.status == DeliveryStatus.SENT,
        Delivery.sent_at > now - window,
        Delivery.sent_at <= now,
    )
    return sent / (window.total_seconds() / 60)


def subscribers_by_status(session: Session) -> dict[str, int]:
    rows = dict(
        session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
    )
    return {s.value: rows.get(s, 0) for s in SubscriberStatus}


def stage_runs(session: Session, *, stages: Sequence[str] = STAGES) -> tuple[StageRun, ...]:
    latest = last_runs(session, stages=tuple(stages))
    result = []
    for stage in stages:
        run = latest[stage]
        success = session.scalar(
            select(func.max(JobRun.finished_at)).where(JobRun.stage == stage, JobRun.ok.is_(True))
        )
        result.append(
            StageRun(
                stage=stage,
                started_at=run.started_at if run else None,
                finished_at=run.finished_at if run else None,
                ok=run.ok if run else None,
                detail=dict(run.detail or {}) if run else {},
                last_success_at=success,
            )
        )
    return tuple(result)


@dataclass(frozen=True, slots=True)
class EditionRow:
    id: int
    day: dt.date
    kind: str
    counts: dict[str, int]  # delivery status -> rows

    @property
    def failed(self) -> int:
        return self.counts.get(DeliveryStatus.FAILED.value, 0)


def recent_editions(session: Session, *, limit: int = 7) -> tuple[EditionRow, ...]:
    """The newest editions with their deliveries by status (where retry-failed applies)."""
    editions = session.execute(
        select(Edition.id, Edition.day, Edition.kind)
        .order_by(Edition.day.desc(), Edition.id.desc())
        .limit(limit)
    ).all()
    ids = [e.id for e in editions]
    counts: dict[int, dict[str, int]] = {i: dict.fromkeys(DELIVERY_STATUSES, 0) for i in ids}
    if ids:
        for edition_id, status, n in session.execute(
            select(Delivery.edition_id, Delivery.status, func.count())
            .where(Delivery.edition_id.in_(ids))
            .group_by(Delivery.edition_id, Delivery.status)
        ):
            counts[edition_id][DeliveryStatus(status).value] = n
    return tuple(
        EditionRow(id=e.id, day=e.day, kind=e.kind.value, counts=counts[e.id]) for e in editions
    )


# --- everything at once ---------------------------------------------------------------------


def take_snapshot(
    *,
    sessions: sessionmaker[Session],
    redis: redis_lib.Redis,
    celery: CeleryLike | None,
    queues: Sequence[str],
    now: dt.datetime,
    embedded: bool = False,
    worker_timeout: float = 1.0,
    beat_prefix: str = REDBEAT_PREFIX,
    beat_lock_timeout: int = REDBEAT_LOCK_TIMEOUT,
) -> Snapshot:
    """Read every source; ``celery=None`` skips the worker ping (embedded mode has none)."""
    errors: list[str] = []
    parts: dict[str, Any] = {"paused": None}
    try:
        parts["paused"] = pause_info(redis)
        parts["queues"] = queue_depths(redis, queues=queues)
        parts["beat"] = beat_status(
            redis, now=now, prefix=beat_prefix, lock_timeout=beat_lock_timeout
        )
    except redis_lib.RedisError as exc:
        errors.append(f"redis: {type(exc).__name__}: {exc}")
    if celery is not None:
        try:
            parts["workers"] = workers_online(celery, timeout=worker_timeout)
        except Exception as exc:  # kombu raises its own and OS errors when the broker is gone
            errors.append(f"celery: {type(exc).__name__}: {exc}")
    try:
        with sessions() as session:
            parts.update(_database_parts(session, now=now))
    except Exception as exc:  # SQLAlchemyError, or a driver error while connecting
        log.warning("monitoring could not read the database: %s", exc)
        errors.append(f"database: {type(exc).__name__}: {exc}")
    return Snapshot(taken_at=now, embedded=embedded, errors=tuple(errors), **parts)


def _database_parts(session: Session, *, now: dt.datetime) -> dict[str, Any]:
    return {
        "runs": stage_runs(session),
        "funnel": funnel(session, day=now.date()),
        "backlog": backlog(session),
        "send_rate_5m": send_rate(session, now=now, window=dt.timedelta(minutes=5)),
        "send_rate_60m": send_rate(session, now=now, window=dt.timedelta(minutes=60)),
        "bounces_today": bounces(session, day=now.date()),
        "subscribers": subscribers_by_status(session),
        "bounces_24h": last_24h(session, now=now),
    }
