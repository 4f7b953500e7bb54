"""What the broker knows: queue depths in kombu's Redis lists, the workers that answer a
ping, and RedBeat's lock and schedule.

These read kombu's and RedBeat's Redis keys directly, without importing either library
(tests/unit/ops/test_monitoring.py checks the names still match). Every reader takes its
Redis client or Celery app as an argument.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

import redis as redis_lib

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


# --- queues ---------------------------------------------------------------------------------


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


# --- workers and beat -----------------------------------------------------------------------


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
        k.decode() if isinstance(k, bytes) else str(k)
        for k in cast(list[bytes | str], redis.zrange(f"{prefix}:schedule", 0, -1))
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
