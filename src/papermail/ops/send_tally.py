"""Counting sends across a fleet of workers, for /metrics.

Sends happen in Celery workers: prefork children on any number of machines, none of
which Prometheus scrapes. So each worker process owns a ``SendTally``: its ``observe``
only counts in memory (cheap, called once per message), its ``flush`` adds the counts
to a Redis hash after each batch (one round trip), and the web process exposes the
fleet-wide totals from Redis as a real histogram and counter (metrics.py). Totals only
ever grow, as Prometheus expects; losing Redis resets them, which ``rate()`` treats like
a process restart. This module keeps no tally of its own: whoever sends makes one and
keeps it.

Embedded mode has no such tally: its Redis is an in-process fakeredis, and the sends
were made by another process (``papermail demo``) or inline without one. There the send
counter is derived from the ledger, always (``ledger_send_totals``): see its docstring
for what each outcome counts.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import redis as redis_lib
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import Delivery, DeliveryStatus
from papermail.ops.monitoring import BOUNCE_PREFIX

SEND_OUTCOMES = ("sent", "retry", "failed", "bounced", "skipped")
# SMTP round trips on a LAN relay take milliseconds; a slow or throttling provider, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SENDS_KEY = "papermail:metrics:sends"


# What the ledger can tell (embedded mode): how many retries a row went through is not kept.
LEDGER_OUTCOMES = ("sent", "failed", "bounced", "skipped")


@dataclass
class SendTotals:
    outcomes: dict[str, int] = field(default_factory=dict)
    buckets: dict[float, int] = field(default_factory=dict)  # per bucket, not cumulative
    latency_sum: float = 0.0
    latency_count: int = 0
    from_ledger: bool = False  # outcomes only (LEDGER_OUTCOMES), no SMTP times

    def is_empty(self) -> bool:
        return not self.outcomes and not self.latency_count


class SendTally:
    """Thread-safe counts of send outcomes and SMTP times since the last ``flush``.

    Make one per process that sends (workers/tasks.py does, after the fork) and pass
    its ``observe`` to the send loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = SendTotals()

    def observe(self, outcome: str, seconds: float | None = None) -> None:
        """Count one message's outcome (sent|retry|failed|bounced|skipped).

        ``seconds`` is the SMTP time for that message (None when no SMTP happened, e.g.
        a skip). Called once per message from the send loop; ``flush`` ships it.
        """
        if outcome not in SEND_OUTCOMES:
            raise ValueError(f"unknown send outcome {outcome!r}; expected one of {SEND_OUTCOMES}")
        with self._lock:
            t = self._totals
            t.outcomes[outcome] = t.outcomes.get(outcome, 0) + 1
            if seconds is not None:
                bound = next((b for b in LATENCY_BUCKETS if seconds <= b), math.inf)
                t.buckets[bound] = t.buckets.get(bound, 0) + 1
                t.latency_sum += seconds
                t.latency_count += 1

    def flush(self, redis: redis_lib.Redis) -> None:
        """Add the counts so far to the fleet's totals in Redis, and start again from zero.

        On a Redis error the counts are kept for the next flush and the error re-raised.
        """
        totals = self.take()
        if totals.is_empty():
            return
        try:
            with redis.pipeline(transaction=True) as pipe:
                for outcome, n in totals.outcomes.items():
                    pipe.hincrby(SENDS_KEY, f"outcome:{outcome}", n)
                for bound, n in totals.buckets.items():
                    pipe.hincrby(SENDS_KEY, f"bucket:{bound_label(bound)}", n)
                pipe.hincrbyfloat(SENDS_KEY, "sum", totals.latency_sum)
                pipe.hincrby(SENDS_KEY, "count", totals.latency_count)
                pipe.execute()
        except redis_lib.RedisError:
            self.give_back(totals)
            raise

    def take(self) -> SendTotals:
        with self._lock:
            taken, self._totals = self._totals, SendTotals()
        return taken

    def give_back(self, totals: SendTotals) -> None:
        """Re-add a tally whose flush failed, so a Redis hiccup loses nothing."""
        with self._lock:
            t = self._totals
            for outcome, n in totals.outcomes.items():
                t.outcomes[outcome] = t.outcomes.get(outcome, 0) + n
            for bound, n in totals.buckets.items():
                t.buckets[bound] = t.buckets.get(bound, 0) + n
            t.latency_sum += totals.latency_sum
            t.latency_count += totals.latency_count


def read_send_totals(redis: redis_lib.Redis) -> SendTotals:
    raw = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in redis.hgetall(SENDS_KEY).items()
    }
    totals = SendTotals(
        latency_sum=float(raw.get("sum", 0.0)), latency_count=int(raw.get("count", 0))
    )
    for key, value in raw.items():
        kind, _, name = key.partition(":")
        if kind == "outcome":
            totals.outcomes[name] = int(value)
        elif kind == "bucket":
            totals.buckets[float(name)] = int(value)
    return totals


def bound_label(bound: float) -> str:
    """A histogram bucket's ``le`` label."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def ledger_send_totals(sessions: sessionmaker[Session]) -> SendTotals:
    """Send outcomes as the ledger has them, for embedded mode (no workers' tally there).

    ``sent`` counts rows that went out at least once (``sent_at`` is set, and an operator
    resend keeps it), so it only grows; ``failed``, ``bounced`` (a 5xx) and ``skipped``
    count rows in that state now, which an operator's retry-failed can lower (a counter
    reset to ``rate()``; rare, and embedded mode is a laptop). No ``retry``: the ledger
    does not keep how many attempts a row took; no SMTP times either.
    """
    failed = Delivery.status == DeliveryStatus.FAILED
    bounce = func.coalesce(Delivery.last_error, "").like(f"{BOUNCE_PREFIX}%")
    with sessions() as session:
        row = session.execute(
            select(
                func.count(Delivery.sent_at),
                func.count(case((failed & ~bounce, 1))),
                func.count(case((failed & bounce, 1))),
                func.count(case((Delivery.status == DeliveryStatus.SKIPPED, 1))),
            )
        ).one()
    return SendTotals(outcomes=dict(zip(LEDGER_OUTCOMES, row, strict=True)), from_ledger=True)
