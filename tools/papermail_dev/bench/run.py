"""One bench run: its configuration, the run itself, its figures and their report."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from papermail.cli.common import Fail
from papermail.db import make_engine, make_session_factory
from papermail_dev.bench.baseline import raw_baseline, sample_message
from papermail_dev.bench.celery_workers import answering_workers, refusal, wait_workers
from papermail_dev.bench.lifecycle import RunResources, redact, signals_as_exceptions
from papermail_dev.bench.sampling import (
    ProcessSampler,
    cpu_seconds,
    planning_seconds,
    sent_count,
    sent_count_url,
    service_processes,
    variant_count,
    wait_for,
)
from papermail_dev.bench.scratch import (
    SCRATCH_PREFIX,
    bench_settings,
    existing_databases,
    flush_redis,
    prepare,
    scratch_name,
    settings_env,
)

PLAN_TASK = "papermail.plan_deliveries"


@dataclass
class BenchConfig:
    subscribers: int
    workers: int = 1  # worker processes (celery -A workers.celery_app worker), each prefork
    concurrency: int = 4  # pool processes per worker
    batch_size: int = 100
    baseline_connections: int = 4
    baseline_messages: int = 20_000
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379/10"
    timeout_seconds: float = 1800.0
    log_dir: Path = Path("var/bench")
    ledger_async_commit: bool = False
    seed: int = 7
    send_rate_per_second: float = 0.0  # 0: as fast as the sink takes them
    scratch_prefix: str = SCRATCH_PREFIX


@dataclass
class BenchResult:
    subscribers: int
    delivered: int
    duplicates: int
    planning_seconds: float
    total_seconds: float  # plan start -> last message accepted by the sink
    emails_per_second: float
    cpu_ms_per_email: float  # worker processes' user+system CPU / delivered
    peak_rss_mb_per_worker: float
    baseline_emails_per_second: float
    ratio_to_baseline: float
    variants: int
    message_bytes_avg: float
    # Where the rest of the machine's CPU went, per email delivered.
    postgres_cpu_ms_per_email: float = 0.0
    redis_cpu_ms_per_email: float = 0.0
    sink_cpu_ms_per_email: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def report_lines(result: BenchResult) -> str:
    out = io.StringIO()
    r = result
    out.write(f"subscribers            {r.subscribers:,}\n")
    out.write(f"delivered              {r.delivered:,} (duplicates: {r.duplicates})\n")
    out.write(f"planning               {r.planning_seconds:.1f} s\n")
    out.write(f"plan+deliver           {r.total_seconds:.1f} s\n")
    out.write(f"emails/s               {r.emails_per_second:,.0f}\n")
    out.write(f"pipeline CPU per email {r.cpu_ms_per_email:.2f} ms (worker processes)\n")
    out.write(f"  PostgreSQL CPU/email {r.postgres_cpu_ms_per_email:.2f} ms\n")
    out.write(f"  Redis CPU/email      {r.redis_cpu_ms_per_email:.2f} ms\n")
    out.write(f"  SMTP sink CPU/email  {r.sink_cpu_ms_per_email:.2f} ms\n")
    out.write(f"peak RSS per worker    {r.peak_rss_mb_per_worker:.0f} MB\n")
    out.write(f"raw SMTP baseline      {r.baseline_emails_per_second:,.0f} emails/s\n")
    out.write(f"ratio to baseline      {r.ratio_to_baseline:.2f}\n")
    out.write(f"variants               {r.variants}\n")
    out.write(f"avg message size       {r.message_bytes_avg:,.0f} bytes\n")
    for note in r.notes:
        out.write(f"note: {note}\n")
    return out.getvalue()


class EarlierRunStillRunning(Fail):
    """Workers already answer on the bench's broker: they would take this run's tasks."""


def warning_line(config: BenchConfig, database: str) -> str:
    """What the run will flush and create on shared services, said before it does."""
    server = redact(config.pg_admin_url).rsplit("/", 1)[0]
    return (
        f"warning: this run flushes Redis {redact(config.redis_url)} (before and after) and "
        f"creates PostgreSQL database {database} on {server} (dropped after)"
    )


def leftovers_note(admin_url: str, prefix: str) -> str | None:
    """Scratch databases already there: a run in progress, or one killed with SIGKILL."""
    try:
        names = existing_databases(admin_url, prefix)
    except Exception:  # the run itself will say what is wrong with the server
        return None
    if not names:
        return None
    drops = "; ".join(f'DROP DATABASE "{name}" WITH (FORCE)' for name in names)
    return (
        f"note: {len(names)} scratch database(s) of other runs exist (one in progress, or "
        f"killed with SIGKILL): {', '.join(names)}; once no run uses them: psql -c '{drops}'"
    )


def refuse_if_workers_answer(
    redis_url: str,
    *,
    answering: Callable[[str], dict[str, int | None]] = answering_workers,
) -> None:
    try:
        workers = answering(redis_url)
    except Exception as exc:  # kombu's OperationalError, redis' ConnectionError...
        raise Fail(f"cannot reach the bench's Redis at {redact(redis_url)}: {exc}") from exc
    if workers:
        raise EarlierRunStillRunning(refusal(redact(redis_url), workers))


def run_bench(config: BenchConfig, *, log: Callable[[str], None] = print) -> BenchResult:
    from workers.celery_app import make_celery

    database = scratch_name(config.scratch_prefix)
    log(warning_line(config, database))
    refuse_if_workers_answer(config.redis_url)
    note = leftovers_note(config.pg_admin_url, config.scratch_prefix)
    if note:
        log(note)
    with (
        signals_as_exceptions(),
        RunResources(
            redis_url=config.redis_url, pg_admin_url=config.pg_admin_url, log=log
        ) as resources,
    ):
        flush_redis(config.redis_url)
        db_url = resources.create_database(database)
        sink = resources.start_sink()
        settings = bench_settings(db_url, config.redis_url, sink, config.batch_size)
        settings = settings.model_copy(
            update={
                "ledger_async_commit": config.ledger_async_commit,
                "send_rate_per_second": config.send_rate_per_second,
            }
        )
        started = time.perf_counter()
        prepare(settings, subscribers=config.subscribers, seed=config.seed)
        log(f"seeded {config.subscribers:,} subscribers in {time.perf_counter() - started:.1f} s")
        app = make_celery(settings)
        env = settings_env(settings)
        try:
            procs = [
                resources.start_worker(
                    env,
                    name=f"bench{i}@%h",
                    concurrency=config.concurrency,
                    log_path=config.log_dir / f"worker-{i}.log",
                )
                for i in range(config.workers)
            ]
            wait_workers(app, config.workers, timeout=60)
            log(f"{config.workers} worker(s) up: planning and delivering...")
            with ProcessSampler([psutil.Process(p.pid) for p in procs]) as sampler:
                cpu_before = dict(sampler.cpu)
                services = service_processes(sink.pid)
                services_before = {k: cpu_seconds(v) for k, v in services.items()}
                start = time.perf_counter()
                app.send_task(PLAN_TASK, kwargs={"due_only": False})
                done = sink.wait_for(config.subscribers, timeout=config.timeout_seconds)
                elapsed = time.perf_counter() - start
                # The last 250s are in; let their ledger marks land before stopping workers.
                wait_for(lambda: sent_count_url(db_url) >= config.subscribers, timeout=30)
            cpu = sum(v - cpu_before.get(pid, 0.0) for pid, v in sampler.cpu.items())
            # Backends started during the run count from zero.
            service_cpu = {
                kind: sum(
                    v - services_before[kind].get(pid, 0.0)
                    for pid, v in cpu_seconds(service_processes(sink.pid)[kind]).items()
                )
                for kind in services
            }
            peak_rss = max(sampler.peak_rss.values(), default=0)
            resources.stop_workers()
        finally:
            app.close()
        engine = make_engine(db_url)
        sessions = make_session_factory(engine)
        delivered, plan_s = sent_count(sessions), planning_seconds(sessions)
        variants = variant_count(sessions)
        engine.dispose()
        _total, recipients, duplicates = sink.stats()
        payload = sample_message(settings)
        log("running the raw SMTP baseline...")
        baseline = raw_baseline(
            sink,
            data=payload,
            connections=config.baseline_connections,
            messages=min(config.baseline_messages, config.subscribers),
        )
    rate = recipients / elapsed if elapsed else 0.0
    notes = [] if done else [f"timed out after {config.timeout_seconds:.0f}s"]
    return BenchResult(
        subscribers=config.subscribers,
        delivered=delivered,
        duplicates=duplicates,
        planning_seconds=plan_s,
        total_seconds=elapsed,
        emails_per_second=rate,
        cpu_ms_per_email=1000 * cpu / max(1, recipients),
        peak_rss_mb_per_worker=peak_rss / 2**20,
        baseline_emails_per_second=baseline,
        ratio_to_baseline=rate / baseline if baseline else 0.0,
        variants=variants,
        message_bytes_avg=float(len(payload)),
        notes=notes,
        postgres_cpu_ms_per_email=1000 * service_cpu["postgres"] / max(1, recipients),
        redis_cpu_ms_per_email=1000 * service_cpu["redis"] / max(1, recipients),
        sink_cpu_ms_per_email=1000 * service_cpu["sink"] / max(1, recipients),
    )
