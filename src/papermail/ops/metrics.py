"""Prometheus metrics: the monitoring snapshot as gauges, plus SMTP latency and send outcomes.

Gauges are computed at scrape time from ``monitoring.take_snapshot`` by a custom
collector, so /metrics, the CLI and /ops can never disagree.

Sends happen in Celery workers: prefork children on any number of machines, none of
which Prometheus scrapes. So each worker process owns a ``SendTally``: its ``observe``
only counts in memory (cheap, called once per message), its ``flush`` adds the counts
to a Redis hash after each batch (one round trip), and the web process exposes the
fleet-wide totals from Redis as a real histogram and counter. Totals only ever grow, as
Prometheus expects; losing Redis resets them, which ``rate()`` treats like a process
restart. This module keeps no tally of its own: whoever sends makes one and keeps it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis as redis_lib
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from papermail.ops.monitoring import Snapshot

SEND_OUTCOMES = ("sent", "retry", "failed", "bounced", "skipped")
# SMTP round trips on a LAN relay take milliseconds; a slow or throttling provider, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SENDS_KEY = "papermail:metrics:sends"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class SendTotals:
    outcomes: dict[str, int] = field(default_factory=dict)
    buckets: dict[float, int] = field(default_factory=dict)  # per bucket, not cumulative
    latency_sum: float = 0.0
    latency_count: int = 0

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
                    pipe.hincrby(SENDS_KEY, f"bucket:{_bound_label(bound)}", n)
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


def _bound_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


# --- exposition -----------------------------------------------------------------------------


class PapermailCollector(Collector):
    """Reads a fresh snapshot (and the fleet's send totals) at every scrape."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], Snapshot],
        send_totals: Callable[[], SendTotals] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._send_totals = send_totals

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from _source_metrics(snap)
        yield from _broker_metrics(snap)
        yield from _delivery_metrics(snap)
        yield from _stage_metrics(snap)
        if self._send_totals is not None and snap.source_up("redis"):
            yield from _send_metrics(self._send_totals())


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"papermail_{name}", doc, labels=list(labels))


def _source_metrics(snap: Snapshot) -> Iterator[Metric]:
    up = _gauge("monitoring_source_up", "1 if monitoring could read this source.", ("source",))
    # Embedded mode has no Celery broker to ask; saying "down" there would be a false alarm.
    for source in ("redis", "database") if snap.embedded else ("redis", "database", "celery"):
        up.add_metric([source], 1.0 if snap.source_up(source) else 0.0)
    yield up
    paused = _gauge("sending_paused", "1 while an operator has paused sending.")
    paused.add_metric([], 1.0 if snap.paused else 0.0)
    yield paused


def _broker_metrics(snap: Snapshot) -> Iterator[Metric]:
    queued = _gauge(
        "queue_messages",
        "Messages in a Celery queue: ready (waiting) or unacked (reserved by a worker).",
        ("queue", "state"),
    )
    for q in snap.queues:
        queued.add_metric([q.name, "ready"], q.ready)
        queued.add_metric([q.name, "unacked"], q.unacked)
    yield queued
    if snap.workers is not None:
        workers = _gauge("workers_online", "Celery workers that answered a ping.")
        workers.add_metric([], len(snap.workers))
        yield workers
    if snap.beat is not None:
        lock = _gauge("beat_lock_held", "1 while a beat scheduler holds the RedBeat lock.")
        lock.add_metric([], 1.0 if snap.beat.lock_held else 0.0)
        yield lock
        if snap.beat.last_tick is not None:
            tick = _gauge("beat_last_tick_timestamp_seconds", "When beat last ticked.")
            tick.add_metric([], snap.beat.last_tick.timestamp())
            yield tick


def _delivery_metrics(snap: Snapshot) -> Iterator[Metric]:
    if not snap.source_up("database"):
        return
    today = _gauge(
        "deliveries_today", "Deliveries planned today (UTC) by current status.", ("status",)
    )
    for status, n in snap.funnel.items():
        today.add_metric([status], n)
    yield today
    backlog = _gauge(
        "delivery_backlog", "Deliveries still to send across all editions.", ("status",)
    )
    for status, n in snap.backlog.items():
        backlog.add_metric([status], n)
    yield backlog
    rate = _gauge("send_rate_per_minute", "Messages sent per minute over a window.", ("window",))
    rate.add_metric(["5m"], snap.send_rate_5m)
    rate.add_metric(["60m"], snap.send_rate_60m)
    yield rate
    bounces = _gauge("bounces_today", "Deliveries planned today that bounced (5xx).")
    bounces.add_metric([], snap.bounces_today)
    yield bounces
    subscribers = _gauge("subscribers", "Subscribers by status.", ("status",))
    for status, n in snap.subscribers.items():
        subscribers.add_metric([status], n)
    yield subscribers


def _stage_metrics(snap: Snapshot) -> Iterator[Metric]:
    if not snap.source_up("database"):
        return
    last_run = _gauge("stage_last_run_timestamp_seconds", "When a stage last started.", ("stage",))
    success = _gauge(
        "stage_last_success_timestamp_seconds", "When a stage last finished OK.", ("stage",)
    )
    ok = _gauge("stage_last_run_ok", "1 if the stage's last run succeeded.", ("stage",))
    took = _gauge("stage_last_run_duration_seconds", "How long its last run took.", ("stage",))
    ingest = _gauge("ingest_last_papers", "Papers in the last ingest run, by result.", ("result",))
    for run in snap.runs:
        if run.started_at is not None:
            last_run.add_metric([run.stage], run.started_at.timestamp())
        if run.last_success_at is not None:
            success.add_metric([run.stage], run.last_success_at.timestamp())
        if run.ok is not None:
            ok.add_metric([run.stage], 1.0 if run.ok else 0.0)
        if run.duration_seconds is not None:
            took.add_metric([run.stage], run.duration_seconds)
        if run.stage == "ingest":
            for result in ("fetched", "inserted", "updated", "rejected"):
                if isinstance(run.detail.get(result), int):
                    ingest.add_metric([result], run.detail[result])
    yield from (last_run, success, ok, took, ingest)


def _send_metrics(totals: SendTotals) -> Iterator[Metric]:
    sends = CounterMetricFamily(
        "papermail_sends", "Messages by send outcome, all workers.", labels=["outcome"]
    )
    for outcome in SEND_OUTCOMES:
        sends.add_metric([outcome], totals.outcomes.get(outcome, 0))
    yield sends
    cumulative, buckets = 0, []
    for bound in (*LATENCY_BUCKETS, math.inf):
        cumulative += totals.buckets.get(bound, 0)
        buckets.append((_bound_label(bound), cumulative))
    yield HistogramMetricFamily(
        "papermail_smtp_send_seconds",
        "Time to hand one message to the SMTP server, all workers.",
        buckets=buckets,
        sum_value=totals.latency_sum,
    )


def make_registry(
    *, snapshot: Callable[[], Snapshot], send_totals: Callable[[], SendTotals] | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PapermailCollector(snapshot=snapshot, send_totals=send_totals))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
