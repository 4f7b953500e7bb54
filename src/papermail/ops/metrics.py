"""Prometheus metrics, by Prometheus's conventions: counters for what happened, gauges only
for what is true now, and rates left to PromQL (``rate(papermail_sends_total[5m])``).

- Current state (queue depth, backlog, subscribers by status, the last stage runs, ...)
  is a gauge computed at scrape time from ``monitoring.take_snapshot`` by a custom
  collector, so /metrics, the CLI and /ops can never disagree. Each paper source's last
  success and alert come from ``ops.sources``, read at the same scrape.
- ``papermail_sends_total{outcome}`` and the ``papermail_smtp_send_seconds`` histogram
  count what the senders did (see below; in embedded mode, the ledger).
- ``papermail_build_info{version}``, the process's own CPU, memory and file descriptors
  (prometheus_client's ProcessCollector and PlatformCollector), and the web app's
  requests (``HttpMetrics``: counted by route *template*, never the raw path, which
  carries subscribers' tokens).

The send counts come from send_tally.py: each sending process's ``SendTally`` adds to
fleet-wide totals in Redis (or, embedded, the ledger says); this module exposes them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from papermail import __version__
from papermail.ops.monitoring import Snapshot
from papermail.ops.send_tally import (
    LATENCY_BUCKETS,
    LEDGER_OUTCOMES,
    SEND_OUTCOMES,
    SendTotals,
    bound_label,
)
from papermail.ops.sources import SourceHealth

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# --- exposition -----------------------------------------------------------------------------

SendSource = Literal["redis", "database"]
# Each paper source's health as of a snapshot; None when it could not be read.
SourcesReader = Callable[[Snapshot], Sequence[SourceHealth] | None]


class PapermailCollector(Collector):
    """Reads a fresh snapshot (and the send totals) at every scrape.

    ``send_source`` is what ``send_totals`` reads: while the snapshot says that source is
    down, the send metrics are left out rather than waited for a second time. ``sources``
    reads the paper sources' health for the snapshot (``ops.sources``).
    """

    def __init__(
        self,
        *,
        snapshot: Callable[[], Snapshot],
        send_totals: Callable[[], SendTotals] | None = None,
        send_source: SendSource = "redis",
        sources: SourcesReader | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._send_totals = send_totals
        self._send_source = send_source
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield _build_info()
        yield from _source_metrics(snap)
        yield from _broker_metrics(snap)
        yield from _delivery_metrics(snap)
        yield from _stage_metrics(snap)
        if self._sources is not None and snap.source_up("database"):
            try:
                health = self._sources(snap)
            except Exception as exc:  # one missing family must not fail the whole scrape
                log.warning("metrics: could not read the sources: %s", type(exc).__name__)
            else:
                yield from _paper_source_metrics(health or ())
        if self._send_totals is not None and snap.source_up(self._send_source):
            try:
                totals = self._send_totals()
            except Exception as exc:  # one missing family must not fail the whole scrape
                log.warning("metrics: could not read the send totals: %s", type(exc).__name__)
            else:
                yield from _send_metrics(totals)


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"papermail_{name}", doc, labels=list(labels))


def _build_info() -> Metric:
    info = InfoMetricFamily("papermail_build", "The papermail release serving this scrape.")
    info.add_metric([], {"version": __version__})
    return info


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
    # Current state only. What was sent, failed or bounced is papermail_sends_total, a
    # counter: per-minute rates and "today" totals are PromQL's job (docs/operations.md).
    if not snap.source_up("database"):
        return
    backlog = _gauge(
        "delivery_backlog", "Deliveries still to send across all editions.", ("status",)
    )
    for status, n in snap.backlog.items():
        backlog.add_metric([status], n)
    yield backlog
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


def _paper_source_metrics(health: Sequence[SourceHealth]) -> Iterator[Metric]:
    if not health:
        return
    success = _gauge(
        "source_last_success_timestamp_seconds",
        "When a paper source's last ingest finished OK (within the last 14 days).",
        ("source",),
    )
    alert = _gauge(
        "source_alert",
        "1 while a paper source is failing: no success in a day, or none at all.",
        ("source",),
    )
    for h in health:
        if h.last_success_at is not None:
            success.add_metric([h.source], h.last_success_at.timestamp())
        alert.add_metric([h.source], 1.0 if h.alert else 0.0)
    yield from (success, alert)


def _send_metrics(totals: SendTotals) -> Iterator[Metric]:
    if totals.from_ledger:
        sends = CounterMetricFamily(
            "papermail_sends",
            "Deliveries by send outcome, from the ledger (embedded mode: no workers' tally).",
            labels=["outcome"],
        )
        outcomes: tuple[str, ...] = LEDGER_OUTCOMES
    else:
        sends = CounterMetricFamily(
            "papermail_sends", "Messages by send outcome, all workers.", labels=["outcome"]
        )
        outcomes = SEND_OUTCOMES
    for outcome in outcomes:
        sends.add_metric([outcome], totals.outcomes.get(outcome, 0))
    yield sends
    if totals.from_ledger:
        return  # the ledger keeps no SMTP times: no histogram rather than an empty one
    cumulative, buckets = 0, []
    for bound in (*LATENCY_BUCKETS, math.inf):
        cumulative += totals.buckets.get(bound, 0)
        buckets.append((bound_label(bound), cumulative))
    yield HistogramMetricFamily(
        "papermail_smtp_send_seconds",
        "Time to hand one message to the SMTP server, all workers.",
        buckets=buckets,
        sum_value=totals.latency_sum,
    )


def make_registry(
    *,
    snapshot: Callable[[], Snapshot],
    send_totals: Callable[[], SendTotals] | None = None,
    send_source: SendSource = "redis",
    sources: SourcesReader | None = None,
) -> CollectorRegistry:
    """papermail's collector plus this process's own metrics (process_*, python_info)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        PapermailCollector(
            snapshot=snapshot, send_totals=send_totals, send_source=send_source, sources=sources
        )
    )
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
