"""--send-in-process: the send path's own cost, in the bench's process, one batch at a time.

The full bench runs four send processes, the planner, PostgreSQL and the sink on two
cores: every CPU figure there carries the others' contention, and a profiler counts a
process that waits in the run queue as busy in whatever it waits on (py-spy put a third
of a sending process's "time" in reading SMTP replies). Here the edition is planned first,
then every batch is sent by ``stages.send_batch`` in this process, one after another, to
the same sink: what one message costs the send path, PostgreSQL and the sink, with nothing
else running. No Celery (the worker adds its task handling on top), no baseline.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psutil

from papermail import gc_tuning, stages
from papermail.clock import utcnow
from papermail.wiring import Wiring
from papermail_dev.bench.run import BenchConfig, scratch_run, seed
from papermail_dev.bench.run import _line as line
from papermail_dev.bench.sampling import (
    MachineCounters,
    MachineLoad,
    cpu_seconds,
    distinct_selections,
    service_processes,
)
from papermail_dev.bench.scratch import bench_settings


@dataclass
class SendPathResult:
    subscribers: int
    planned: int
    warmup_messages: int  # the first batch: imports, connections, the edition's encoding
    sent: int  # in the timed batches
    duplicates: int  # extra copies the sink received, over the whole run
    seconds: float  # the timed batches, wall
    emails_per_second: float
    cpu_ms_per_email: float  # this process: the send path
    postgres_cpu_ms_per_email: float
    sink_cpu_ms_per_email: float
    message_bytes_avg: float
    distinct_share: float
    ledger_async_commit: bool = False
    feedback_histories: bool = False
    notes: list[str] = field(default_factory=list)
    machine: MachineLoad | None = None  # the whole machine during the timed batches

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass
class _Batches:
    """Planning's dispatcher here: keeps every batch, to be sent by this process."""

    queued: bool = True
    batches: list[list[int]] = field(default_factory=list)

    def send_batch(self, delivery_ids: list[int]) -> None:
        self.batches.append(list(delivery_ids))

    def send_confirmation(self, subscriber_id: int) -> None:
        raise RuntimeError("the send-path bench sends no confirmations")

    def ingest(self) -> str | None:
        raise RuntimeError("the send-path bench ingests nothing")


def run_send_in_process(
    config: BenchConfig, *, log: Callable[[str], None] = print
) -> SendPathResult:
    """Seed and plan, then send every batch from this process: the send path's cost."""
    with scratch_run(config, log=log) as (resources, db_url):
        sink = resources.start_sink()
        settings = bench_settings(db_url, config.redis_url, sink, config.batch_size)
        settings = settings.model_copy(update={"ledger_async_commit": config.ledger_async_commit})
        prepared, _seconds = seed(config, settings, log=log)
        w = Wiring(settings)
        try:
            planned = _Batches()
            log("planning in this process...")
            reports = stages.plan(
                w,
                dispatcher=planned,
                now=utcnow(),
                due_only=False,
                edition_ids=[prepared.edition_id],
            )
            if not planned.batches:
                raise RuntimeError("planning published no batches")
            log(f"sending {len(planned.batches):,} batches from this process...")
            first, *timed = planned.batches
            gc_tuning.tune()  # as every Celery pool process is (workers/celery_app.py)
            warmup = _send(w, first)
            me, sink_proc = psutil.Process(), psutil.Process(sink.pid)
            before, counters = _cpu(me, sink_proc), MachineCounters.now()
            start = time.perf_counter()
            sent = sum(_send(w, ids) for ids in timed)
            seconds = time.perf_counter() - start
            after = _cpu(me, sink_proc)
            machine = MachineLoad.between(counters, MachineCounters.now())
            deliveries, distinct = distinct_selections(w.sessions, prepared.edition_id)
        finally:
            w.engine.dispose()
            w.redis.close()
        accepted, _recipients, duplicates, accepted_bytes = sink.stats()
    planned_rows = sum(r.planned for r in reports)
    notes = []
    if warmup + sent != planned_rows:
        notes.append(f"sent {warmup + sent:,} of the {planned_rows:,} rows planned")
    per = 1000 / max(1, sent)
    return SendPathResult(
        subscribers=config.subscribers,
        planned=planned_rows,
        warmup_messages=warmup,
        sent=sent,
        duplicates=duplicates,
        seconds=seconds,
        emails_per_second=sent / seconds if seconds else 0.0,
        cpu_ms_per_email=per * (after["me"] - before["me"]),
        postgres_cpu_ms_per_email=per * (after["postgres"] - before["postgres"]),
        sink_cpu_ms_per_email=per * (after["sink"] - before["sink"]),
        message_bytes_avg=accepted_bytes / accepted if accepted else 0.0,
        distinct_share=distinct / deliveries if deliveries else 0.0,
        ledger_async_commit=config.ledger_async_commit,
        feedback_histories=config.feedback_histories,
        notes=notes,
        machine=machine,
    )


def _send(w: Wiring, ids: list[int]) -> int:
    """One batch as the send task runs it (workers/tasks.py), without Celery around it."""
    sent = stages.send_batch(w, ids).sent
    gc_tuning.after_batch()
    return sent


def _cpu(me: psutil.Process, sink: psutil.Process) -> dict[str, float]:
    # PostgreSQL's processes are listed anew: backends the batches start count from zero.
    return {
        "me": sum(cpu_seconds([me]).values()),
        "sink": sum(cpu_seconds([sink]).values()),
        "postgres": sum(cpu_seconds(service_processes(None)["postgres"]).values()),
    }


def send_path_report_lines(r: SendPathResult) -> str:
    out = io.StringIO()
    out.write(line("subscribers", f"{r.subscribers:,}"))
    out.write(line("rows planned", f"{r.planned:,} ({100 * r.distinct_share:.1f}% distinct)"))
    out.write(line("warm-up batch", f"{r.warmup_messages:,} messages (not timed)"))
    out.write(line("sent, timed", f"{r.sent:,} in {r.seconds:.1f} s (duplicates: {r.duplicates})"))
    out.write(line("emails/s", f"{r.emails_per_second:,.0f} (one process, one batch at a time)"))
    out.write(line("send path CPU/email", f"{r.cpu_ms_per_email:.3f} ms (this process)"))
    out.write(line("PostgreSQL CPU/email", f"{r.postgres_cpu_ms_per_email:.3f} ms"))
    out.write(line("SMTP sink CPU/email", f"{r.sink_cpu_ms_per_email:.3f} ms"))
    if r.machine is not None:
        out.write(line("the machine meanwhile", r.machine.describe(r.sent)))
    out.write(line("avg message size", f"{r.message_bytes_avg:,.0f} bytes"))
    for note in r.notes:
        out.write(f"note: {note}\n")
    return out.getvalue()
