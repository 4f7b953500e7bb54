"""What operators see: queues, workers, beat, stage runs, the delivery funnel, subscribers.

Every reader takes what it touches (a Redis client, a session, a Celery app) as an
argument, so the CLI, the /ops page and /metrics share one code path and tests can
hand in fakeredis and SQLite. ``take_snapshot`` gathers everything into one frozen
``Snapshot``; a source that does not answer becomes an entry in ``Snapshot.errors``
instead of an exception, because a dashboard is most needed when something is down.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import redis as redis_lib
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, sessionmaker

from papermail.control import pause_info
from papermail.jobs import last_runs
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    JobRun,
    Subscriber,
    SubscriberStatus,
)
from papermail.sending import skip_reason

log = logging.getLogger(__name__)

STAGES = ("ingest", "edition", "planning")

# kombu's Redis transport (kombu/transport/redis.py): a queue with priorities is several
# lists, ``name`` for priority 0 and ``name + SEP + str(step)`` for the other steps; a
# message a worker has reserved but not acknowledged sits in the ``unacked`` hash (with
# its arrival time in the ``unacked_index`` zset) until it is acked or restored.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
KOMBU_UNACKED_KEY = "unacked"

# RedBeat (redbeat/schedulers.py) keeps ``<prefix>:schedule`` (a zset of entry keys, each a
# hash whose ``meta`` field holds last_run_at) and ``<prefix>:lock``, which a live beat
# extends back to its full timeout on every tick.
REDBEAT_PREFIX = "papermail:redbeat"
REDBEAT_LOCK_TIMEOUT = 150  # seconds; workers.celery_app sets redbeat_lock_timeout to this

# Minute-by-minute samples for the 24-hour charts (queue depth, failures).
SAMPLES_KEY = "papermail:metrics:samples"
SAMPLES_KEPT = dt.timedelta(hours=25)

# The funnel's columns, in the order a message moves through them. "suppressed" is the
# part of "skipped" whose subscriber had been suppressed (bounces), shown on its own.
FUNNEL = ("pending", "sending", "sent", "retry", "failed", "suppressed", "skipped")
SUPPRESSED_SKIP_REASON = skip_reason(SubscriberStatus.SUPPRESSED)
DELIVERY_STATUSES = tuple(s.value for s in DeliveryStatus)
BOUNCE_PREFIX = "bounced:"


class CeleryLike(Protocol):
    """The one part of a Celery app monitoring uses (``app.control``)."""

    @property
    def control(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class QueueDepth:
    name: str
    ready: int  # waiting in the broker, summed over the priority sub-queues
    unacked: int  # handed to a worker, not yet acknowledged (running or prefetched)

    @property
    def total(self) -> int:
        return self.ready + self.unacked


@dataclass(frozen=True, slots=True)
class BeatStatus:
    lock_held: bool
    last_tick: dt.datetime | None  # estimated from the lock's remaining time to live
    last_dispatch: dt.datetime | None  # the newest last_run_at of any schedule entry
    entries: dict[str, dt.datetime | None] = field(default_factory=dict)


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
    errors: tuple[str, ...] = ()  # "redis: ConnectionError ..." for each source that failed

    def source_up(self, source: str) -> bool:
        return not any(e.startswith(f"{source}:") for e in self.errors)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (datetimes as ISO 8601 strings)."""
        data = asdict(self)
        data["queues"] = [dict(asdict(q), total=q.total) for q in self.queues]
        data["runs"] = [dict(asdict(r), duration_seconds=r.duration_seconds) for r in self.runs]
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- broker ---------------------------------------------------------------------------------


def queue_depths(redis: redis_lib.Redis, *, queues: Sequence[str]) -> tuple[QueueDepth, ...]:
    with redis.pipeline(transaction=False) as pipe:
        for name in queues:
            for step in KOMBU_PRIORITY_STEPS:
                pipe.llen(_priority_queue(name, step))
        lengths = pipe.execute()
    per_queue = len(KOMBU_PRIORITY_STEPS)
    unacked = unacked_counts(redis, queues=queues)
    return tuple(
        QueueDepth(
            name=name,
            ready=sum(lengths[i * per_queue : (i + 1) * per_queue]),
            unacked=unacked.get(name, 0),
        )
        for i, name in enumerate(queues)
    )


def _priority_queue(name: str, step: int) -> str:
    return f"{name}{KOMBU_PRIORITY_SEP}{step}" if step else name


def unacked_counts(redis: redis_lib.Redis, *, queues: Iterable[str]) -> dict[str, int]:
    """Reserved-but-unacknowledged messages per queue, from kombu's ``unacked`` hash.

    Each value is ``[payload, exchange, routing_key]``; Celery's queues here are direct,
    so the routing key (or failing that the exchange) names the queue.
    """
    known = set(queues)
    counts: dict[str, int] = {}
    for _tag, raw in redis.hscan_iter(KOMBU_UNACKED_KEY, count=500):
        try:
            _payload, exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        name = routing_key if routing_key in known else exchange
        counts[name] = counts.get(name, 0) + 1
    return counts


def workers_online(app: CeleryLike, *, timeout: float) -> tuple[str, ...]:
    """Names of the workers that answer a broadcast ping within ``timeout`` seconds."""
    replies = app.control.inspect(timeout=timeout).ping() or {}
    return tuple(sorted(replies))


def beat_status(
    redis: redis_lib.Redis,
    *,
    now: dt.datetime,
    prefix: str = REDBEAT_PREFIX,
    lock_timeout: int = REDBEAT_LOCK_TIMEOUT,
) -> BeatStatus:
    ttl_ms = redis.pttl(f"{prefix}:lock")
    lock_held = ttl_ms is not None and ttl_ms > 0
    last_tick = now - dt.timedelta(milliseconds=lock_timeout * 1000 - ttl_ms) if lock_held else None
    entries: dict[str, dt.datetime | None] = {}
    keys = [
        k.decode() if isinstance(k, bytes) else k for k in redis.zrange(f"{prefix}:schedule", 0, -1)
    ]
    if keys:
        with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "meta")
            metas = pipe.execute()
        for key, meta in zip(keys, metas, strict=True):
            entries[key.removeprefix(prefix).lstrip(":")] = _redbeat_last_run(meta)
    runs = [t for t in entries.values() if t is not None]
    return BeatStatus(
        lock_held=lock_held,
        last_tick=last_tick,
        last_dispatch=max(runs) if runs else None,
        entries=entries,
    )


def _redbeat_last_run(meta: bytes | str | None) -> dt.datetime | None:
    """RedBeat's JSON meta without importing it: {"last_run_at": {"__type__": "datetime"...}}."""
    if not meta:
        return None
    try:
        value = json.loads(meta).get("last_run_at")
        if not isinstance(value, dict) or value.get("__type__") != "datetime":
            return None
        zone = value.get("timezone", "UTC")
        tz = (
            ZoneInfo(zone)
            if isinstance(zone, str)
            else dt.timezone(dt.timedelta(seconds=float(zone)))
        )
        parts = {
            k: int(value[k])
            for k in ("year", "month", "day", "hour", "minute", "second", "microsecond")
        }
        return dt.datetime(**parts, tzinfo=tz).astimezone(dt.UTC)
    except (ValueError, TypeError, KeyError):
        return None


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
    return _count_deliveries(
        session,
        Delivery.created_at >= start,
        Delivery.created_at < end,
        Delivery.status == DeliveryStatus.FAILED,
        Delivery.last_error.like(f"{BOUNCE_PREFIX}%"),
    )


def _count_deliveries(session: Session, *where: ColumnElement[bool]) -> int:
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
    sent = _count_deliveries(
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
    }


# --- the last 24 hours ----------------------------------------------------------------------
# Send rate comes from the ledger (sent_at). Queue depth and failures have no history in
# the database, so a beat task (papermail.sample_metrics) records a small sample every
# minute in a Redis sorted set; failures per hour are the rises of the failed-row count
# between samples (an operator retry lowers it, which can hide failures in that hour).


@dataclass(frozen=True, slots=True)
class Sample:
    at: dt.datetime
    queues: dict[str, int]  # ready + unacked per queue
    failed_rows: int  # deliveries in status failed, all editions


@dataclass(frozen=True, slots=True)
class History:
    hours: tuple[dt.datetime, ...]  # start of each hour, oldest first; the last is partial
    sent: tuple[int, ...]
    failed: tuple[int, ...]
    queue_samples: tuple[Sample, ...]


def failed_rows(session: Session) -> int:
    return _count_deliveries(session, Delivery.status == DeliveryStatus.FAILED)


def record_sample(
    redis: redis_lib.Redis,
    *,
    queues: Sequence[QueueDepth],
    failed: int,
    now: dt.datetime,
    min_interval: dt.timedelta = dt.timedelta(seconds=50),
) -> bool:
    """Append a sample unless one newer than ``min_interval`` exists; trims old ones."""
    stamp = now.timestamp()
    newest = redis.zrevrange(SAMPLES_KEY, 0, 0, withscores=True)
    if newest and stamp - newest[0][1] < min_interval.total_seconds():
        return False
    member = json.dumps(
        {"t": stamp, "q": {q.name: q.total for q in queues}, "f": failed}, separators=(",", ":")
    )
    with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(SAMPLES_KEY, {member: stamp})
        pipe.zremrangebyscore(SAMPLES_KEY, "-inf", stamp - SAMPLES_KEPT.total_seconds())
        pipe.execute()
    return True


def sample_now(
    *,
    redis: redis_lib.Redis,
    sessions: sessionmaker[Session],
    queues: Sequence[str],
    now: dt.datetime,
    min_interval: dt.timedelta = dt.timedelta(seconds=50),
) -> bool:
    """Take and store one sample (the beat task's body; the /ops page calls it too)."""
    with sessions() as session:
        failed = failed_rows(session)
    depths = queue_depths(redis, queues=queues)
    return record_sample(redis, queues=depths, failed=failed, now=now, min_interval=min_interval)


def read_samples(
    redis: redis_lib.Redis, *, since: dt.datetime, until: dt.datetime
) -> tuple[Sample, ...]:
    samples = []
    for raw in redis.zrangebyscore(SAMPLES_KEY, since.timestamp(), until.timestamp()):
        try:
            data = json.loads(raw)
            samples.append(
                Sample(
                    at=dt.datetime.fromtimestamp(float(data["t"]), dt.UTC),
                    queues={str(k): int(v) for k, v in data["q"].items()},
                    failed_rows=int(data["f"]),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a foreign or damaged member must not break the page
    return tuple(samples)


def history(
    session: Session, redis: redis_lib.Redis, *, now: dt.datetime, hours: int = 24
) -> History:
    start = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=hours - 1)
    starts = tuple(start + dt.timedelta(hours=i) for i in range(hours))
    # One sample from before the window gives the first hour a baseline for its failures.
    samples = read_samples(redis, since=start - dt.timedelta(hours=1), until=now)
    failed = [0] * hours
    for before, after in zip(samples, samples[1:], strict=False):
        index = _hour_index(after.at, start, hours)
        if index is not None:
            failed[index] += max(0, after.failed_rows - before.failed_rows)
    return History(
        hours=starts,
        sent=tuple(sent_per_hour(session, start=start, hours=hours)),
        failed=tuple(failed),
        queue_samples=tuple(s for s in samples if s.at >= start),
    )


def _hour_index(at: dt.datetime, start: dt.datetime, hours: int) -> int | None:
    index = int((at - start).total_seconds() // 3600)
    return index if 0 <= index < hours else None


def sent_per_hour(session: Session, *, start: dt.datetime, hours: int) -> list[int]:
    """Messages sent in each hour from ``start``; grouped in the database, not in Python."""
    if session.get_bind().dialect.name == "postgresql":
        bucket = func.date_trunc("hour", func.timezone("UTC", Delivery.sent_at))
    else:  # SQLite stores UTC text: 'YYYY-MM-DD HH:MM:SS.ffffff'
        bucket = func.strftime("%Y-%m-%d %H:00:00", Delivery.sent_at)
    rows = session.execute(
        select(bucket, func.count())
        .where(
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at >= start,
            Delivery.sent_at < start + dt.timedelta(hours=hours),
        )
        .group_by(bucket)
    ).all()
    counts = [0] * hours
    for key, n in rows:
        at = key if isinstance(key, dt.datetime) else dt.datetime.fromisoformat(str(key))
        index = _hour_index(at.replace(tzinfo=dt.UTC), start, hours)
        if index is not None:
            counts[index] += n
    return counts


# --- words for people (CLI and /ops share them) ---------------------------------------------


def ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def describe_run(run: StageRun) -> str:
    """A stage run's detail as a short sentence."""
    d = run.detail
    if run.started_at is None:
        return "never run"
    if run.ok is None:
        return "running (or died without finishing)"
    if not run.ok:
        return f"failed: {d.get('error', 'unknown error')}"
    if run.stage == "ingest":
        return (
            f"{d.get('fetched', 0)} fetched, {d.get('inserted', 0)} new, "
            f"{d.get('rejected', 0)} rejected"
        )
    if run.stage == "edition":
        if d.get("edition_id") is None:
            return "no papers for an edition"
        made = "built" if d.get("created") else "already built"
        return f"#{d['edition_id']} {d.get('kind', '')} {made}, {d.get('papers', 0)} papers"
    if run.stage == "planning":
        batches = d.get("batches", 0)
        return f"{d.get('planned', 0)} planned in {batches} batch{'' if batches == 1 else 'es'}"
    return "ok"


def describe_pause(note: str | None, now: dt.datetime) -> str:
    """control.py's "<iso time> <reason>" as "since 13:26 UTC (2m ago), by ops"."""
    if not note:
        return ""
    stamp, _, reason = note.partition(" ")
    try:
        since = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return note
    when = f"since {since.astimezone(dt.UTC):%H:%M} UTC ({ago(since, now)})"
    return f"{when}, {reason}" if reason else when
