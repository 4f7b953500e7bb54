"""The last 24 hours, for the /ops charts: sent per hour, failures per hour, queue depth.

Send rate comes from the ledger (sent_at). Queue depth and failures have no history in
the database, so a beat task (papermail.sample_metrics) records a small sample every
minute in a Redis sorted set; failures per hour are the rises of the failed-row count
between samples (an operator retry lowers it, which can hide failures in that hour).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis as redis_lib
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from papermail.db import on_postgres
from papermail.models import Delivery, DeliveryStatus
from papermail.ops.broker import QueueDepth, queue_depths
from papermail.ops.monitoring import count_deliveries

SAMPLES_KEY = "papermail:metrics:samples"
SAMPLES_KEPT = dt.timedelta(hours=25)


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


# --- samples --------------------------------------------------------------------------------


def failed_rows(session: Session) -> int:
    return count_deliveries(session, Delivery.status == DeliveryStatus.FAILED)


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
    newest = cast(list[tuple[bytes, float]], redis.zrevrange(SAMPLES_KEY, 0, 0, withscores=True))
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
    found = redis.zrangebyscore(SAMPLES_KEY, since.timestamp(), until.timestamp())
    for raw in cast(list[bytes], found):
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


# --- per hour -------------------------------------------------------------------------------


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
    if on_postgres(session):
        bucket = func.date_trunc("hour", func.timezone("UTC", Delivery.sent_at))
    else:  # SQLite stores UTC text: 'YYYY-MM-DD HH:MM:SS.ffffff'
        bucket = func.strftime("%Y-%m-%d %H:00:00", Delivery.sent_at)
    rows: Sequence[tuple[object, int]] = session.execute(
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
