"""One bench run: its configuration, the run itself, its figures and their report."""

from __future__ import annotations

import importlib
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from papermail import gc_tuning, stages
from papermail.cli.common import Fail
from papermail.clock import utcnow
from papermail.config import Settings
from papermail.db import make_engine, make_session_factory
from papermail.dispatch import PIPELINE_QUEUE, SEND_QUEUE
from papermail.wiring import Wiring
from papermail_dev.bench.arxiv_pool import ArxivPool
from papermail_dev.bench.baseline import raw_baseline, sample_messages
from papermail_dev.bench.celery_workers import answering_workers, refusal, wait_workers
from papermail_dev.bench.lifecycle import RunResources, redact, signals_as_exceptions
from papermail_dev.bench.sampling import (
    MachineCounters,
    MachineLoad,
    ProcessSampler,
    cpu_seconds,
    distinct_selections,
    planning_seconds,
    sent_count,
    sent_count_url,
    service_processes,
    variant_count,
    wait_for,
)
from papermail_dev.bench.scratch import (
    SCRATCH_PREFIX,
    Prepared,
    bench_settings,
    existing_databases,
    flush_redis,
    prepare_run,
    scratch_name,
    settings_env,
)

PLAN_TASK = "papermail.plan_deliveries"


@dataclass
class BenchConfig:
    subscribers: int
    # Send workers (celery -A workers.celery_app worker -Q papermail.send), each prefork;
    # beside them one pipeline worker (-Q papermail.pipeline, one process) plans, as in
    # docker-compose.yml, so the send workers never load the relevance model.
    workers: int = 1
    concurrency: int = 4  # pool processes per send worker
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
    # Every reader with 3-12 feedback marks and a blend weight of their own (scratch.py),
    # so nearly every reader gets a selection of their own.
    feedback_histories: bool = False
    # Prepare and seed, then plan in this process: no workers, no sink, no baseline.
    plan_only: bool = False
    # A corpus's papers new on arXiv in the edition's pool, and readers who follow arXiv
    # categories: the pool of an operator who ingests arXiv (arxiv_pool.py).
    arxiv_pool: ArxivPool | None = None
    # Readers who type that many distinct topics between them (typed_topics.py); else the
    # twelve of scratch.TOPICS.
    typed_topics: int | None = None


@dataclass
class BenchResult:
    subscribers: int
    delivered: int
    duplicates: int
    planning_seconds: float
    total_seconds: float  # plan start -> last message accepted by the sink
    emails_per_second: float
    cpu_ms_per_email: float  # every worker process's user+system CPU (planning too) / delivered
    peak_rss_mb_per_worker: float  # of any send worker process
    baseline_emails_per_second: float
    ratio_to_baseline: float
    variants: int
    message_bytes_avg: float  # of the run's messages, as the sink received them
    # Where the rest of the machine's CPU went, per email delivered.
    postgres_cpu_ms_per_email: float = 0.0
    redis_cpu_ms_per_email: float = 0.0
    sink_cpu_ms_per_email: float = 0.0
    notes: list[str] = field(default_factory=list)
    # The edition's deliveries and how many distinct selections (variant keys) they carry.
    deliveries: int = 0
    distinct_selections: int = 0
    distinct_share: float = 0.0
    feedback_histories: bool = False
    feedback_marks: int = 0  # feedback rows seeded
    pool_papers: int = 0  # the edition's papers every reader's picks come from
    arxiv_papers: int = 0  # of them, new on arXiv (--arxiv-pool)
    typed_topics: int = 0  # distinct topics the readers typed (--typed-topics)
    # The pipeline worker (its main process and its one pool process): planning's cost.
    planner_cpu_seconds: float = 0.0
    planner_peak_rss_mb: float = 0.0
    # Anonymous resident memory (RSS less file-backed pages: see sampling.ProcessSampler).
    peak_anonymous_mb_per_worker: float = 0.0
    planner_peak_anonymous_mb: float = 0.0
    # The baseline's messages: real digests of the run (baseline.sample_messages).
    baseline_messages: int = 0
    baseline_bytes_avg: float = 0.0
    # The whole machine, every process on it, while the run delivered (plan start to the
    # last message) and while the baseline sent its ``baseline_sent`` messages.
    machine: MachineLoad | None = None
    baseline_machine: MachineLoad | None = None
    baseline_sent: int = 0

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass
class PlanResult:
    """--plan-only: planning alone, in the bench's own process."""

    subscribers: int
    pool_papers: int  # the edition's papers every reader's picks come from
    planned: int  # delivery rows this run inserted
    batches: int  # send batches planning published (counted, never sent)
    batch_rows: int  # rows in them
    deliveries: int
    distinct_selections: int
    distinct_share: float
    planning_seconds: float  # the planning job run's start to finish
    wall_seconds: float  # around stages.plan, in this process
    cpu_seconds: float  # this (the planning) process's user + system CPU
    postgres_cpu_seconds: float  # every postgres process on the machine, meanwhile
    peak_rss_mb: float  # this process, sampled every 0.1 s while planning
    peak_anonymous_mb: float = 0.0  # the same, less file-backed pages
    feedback_histories: bool = False
    feedback_marks: int = 0
    arxiv_papers: int = 0  # of the pool, new on arXiv (--arxiv-pool)
    typed_topics: int = 0  # distinct topics the readers typed (--typed-topics)
    seed_seconds: float = 0.0  # schema, papers, subscribers, feedback, edition
    # Importing the relevance model's libraries (scikit-learn, scipy): once a process, at
    # its first plan; not part of planning_seconds.
    model_import_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


PLANNING_LABEL = "relevance scoring + planning"
WIDTH = len(PLANNING_LABEL) + 2


def _line(label: str, value: str) -> str:
    return f"{label:<{WIDTH}}{value}\n"


def share_text(distinct: int, deliveries: int) -> str:
    share = distinct / deliveries if deliveries else 0.0
    return f"{100 * share:.1f}% ({distinct:,} of {deliveries:,} deliveries)"


def rss_text(rss_mb: float, anonymous_mb: float) -> str:
    """Peak RSS, and its anonymous part when it was measured (JSON from older runs lacks it)."""
    if not anonymous_mb:
        return f"{rss_mb:.0f} MB"
    return f"{rss_mb:.0f} MB ({anonymous_mb:.0f} MB anonymous, the rest mapped from files)"


def _feedback_text(marks: int, subscribers: int) -> str:
    return f"{marks:,} marks ({marks / max(1, subscribers):.1f} a reader)"


def pool_text(papers: int, arxiv: int) -> str:
    return f"{papers:,} papers" + (f" ({arxiv:,} new on arXiv)" if arxiv else "")


def topics_text(typed: int) -> str:
    return f"{typed:,} distinct, typed (0-2 a reader)"


def report_lines(result: BenchResult | PlanResult) -> str:
    if isinstance(result, PlanResult):
        return plan_report_lines(result)
    out = io.StringIO()
    r = result
    out.write(_line("subscribers", f"{r.subscribers:,}"))
    if r.feedback_histories:
        out.write(_line("feedback histories", _feedback_text(r.feedback_marks, r.subscribers)))
    if r.pool_papers:  # JSON from older runs lacks it
        out.write(_line("edition pool", pool_text(r.pool_papers, r.arxiv_papers)))
    if r.typed_topics:
        out.write(_line("reader topics", topics_text(r.typed_topics)))
    out.write(_line("delivered", f"{r.delivered:,} (duplicates: {r.duplicates})"))
    out.write(_line(PLANNING_LABEL, f"{r.planning_seconds:.1f} s"))
    out.write(_line("plan+deliver", f"{r.total_seconds:.1f} s"))
    out.write(_line("emails/s", f"{r.emails_per_second:,.0f}"))
    out.write(_line("pipeline CPU per email", f"{r.cpu_ms_per_email:.2f} ms (worker processes)"))
    out.write(_line("  of which planning", f"{r.planner_cpu_seconds:.1f} s (the pipeline worker)"))
    out.write(_line("  PostgreSQL CPU/email", f"{r.postgres_cpu_ms_per_email:.2f} ms"))
    out.write(_line("  Redis CPU/email", f"{r.redis_cpu_ms_per_email:.2f} ms"))
    out.write(_line("  SMTP sink CPU/email", f"{r.sink_cpu_ms_per_email:.2f} ms"))
    if r.machine is not None:
        out.write(_line("the machine, delivering", r.machine.describe(r.delivered)))
    out.write(
        _line(
            "peak RSS per send worker",
            rss_text(r.peak_rss_mb_per_worker, r.peak_anonymous_mb_per_worker),
        )
    )
    out.write(
        _line(
            "peak RSS (pipeline worker)",
            rss_text(r.planner_peak_rss_mb, r.planner_peak_anonymous_mb),
        )
    )
    out.write(_line("raw SMTP baseline", f"{r.baseline_emails_per_second:,.0f} emails/s"))
    if r.baseline_messages:
        out.write(
            _line(
                "  its messages",
                f"{r.baseline_messages} of the run's digests, "
                f"{r.baseline_bytes_avg:,.0f} bytes on average",
            )
        )
    if r.baseline_machine is not None:
        out.write(_line("  the machine meanwhile", r.baseline_machine.describe(r.baseline_sent)))
    out.write(_line("ratio to baseline", f"{r.ratio_to_baseline:.2f}"))
    out.write(_line("variants", f"{r.variants}"))
    out.write(_line("distinct selections", share_text(r.distinct_selections, r.deliveries)))
    out.write(_line("avg message size", f"{r.message_bytes_avg:,.0f} bytes"))
    for note in r.notes:
        out.write(f"note: {note}\n")
    return out.getvalue()


def plan_report_lines(r: PlanResult) -> str:
    out = io.StringIO()
    out.write(_line("subscribers", f"{r.subscribers:,}"))
    if r.feedback_histories:
        out.write(_line("feedback histories", _feedback_text(r.feedback_marks, r.subscribers)))
    out.write(_line("edition pool", pool_text(r.pool_papers, r.arxiv_papers)))
    if r.typed_topics:
        out.write(_line("reader topics", topics_text(r.typed_topics)))
    out.write(_line("seeding", f"{r.seed_seconds:.1f} s"))
    out.write(_line("relevance model import", f"{r.model_import_seconds:.1f} s (once a process)"))
    out.write(_line(PLANNING_LABEL, f"{r.planning_seconds:.1f} s ({r.wall_seconds:.1f} s wall)"))
    out.write(_line("rows planned", f"{r.planned:,} ({r.batches:,} batches published)"))
    out.write(_line("planned/s", f"{r.planned / r.wall_seconds:,.0f}" if r.wall_seconds else "-"))
    out.write(_line("distinct selections", share_text(r.distinct_selections, r.deliveries)))
    out.write(_line("planning process CPU", f"{r.cpu_seconds:.1f} s"))
    out.write(
        _line("PostgreSQL CPU", f"{r.postgres_cpu_seconds:.1f} s (every postgres process here)")
    )
    out.write(_line("peak RSS (planner)", rss_text(r.peak_rss_mb, r.peak_anonymous_mb)))
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


@contextmanager
def scratch_run(
    config: BenchConfig, *, log: Callable[[str], None]
) -> Iterator[tuple[RunResources, str]]:
    """What every kind of run does around its work: say what it flushes and creates,
    refuse to run beside an earlier run's workers, name an earlier run's leftovers; then
    its resources (gone on every exit, SIGTERM too) and its scratch database's URL."""
    database = scratch_name(config.scratch_prefix)
    log(warning_line(config, database))
    refuse_if_workers_answer(config.redis_url)  # they would share (and see flushed) its Redis
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
        yield resources, resources.create_database(database)


def run_bench(config: BenchConfig, *, log: Callable[[str], None] = print) -> BenchResult:
    from workers.celery_app import make_celery

    with scratch_run(config, log=log) as (resources, db_url):
        sink = resources.start_sink()
        settings = bench_settings(db_url, config.redis_url, sink, config.batch_size)
        settings = settings.model_copy(
            update={
                "ledger_async_commit": config.ledger_async_commit,
                "send_rate_per_second": config.send_rate_per_second,
            }
        )
        prepared, _seconds = seed(config, settings, log=log)
        app = make_celery(settings)
        env = settings_env(settings)
        try:
            planner = resources.start_worker(
                env,
                name="benchplan@%h",
                concurrency=1,
                log_path=config.log_dir / "worker-pipeline.log",
                queues=(PIPELINE_QUEUE,),
            )
            procs = [
                resources.start_worker(
                    env,
                    name=f"bench{i}@%h",
                    concurrency=config.concurrency,
                    log_path=config.log_dir / f"worker-{i}.log",
                    queues=(SEND_QUEUE,),
                )
                for i in range(config.workers)
            ]
            wait_workers(app, config.workers + 1, timeout=60)
            log(f"the pipeline worker and {config.workers} send worker(s) up: planning, sending...")
            with (
                ProcessSampler([psutil.Process(p.pid) for p in procs]) as sampler,
                ProcessSampler([psutil.Process(planner.pid)]) as planner_sampler,
            ):
                cpu_before = dict(sampler.cpu)
                planner_before = dict(planner_sampler.cpu)
                services = service_processes(sink.pid)
                services_before = {k: cpu_seconds(v) for k, v in services.items()}
                counters = MachineCounters.now()
                start = time.perf_counter()
                app.send_task(PLAN_TASK, kwargs={"due_only": False})
                done = sink.wait_for(config.subscribers, timeout=config.timeout_seconds)
                elapsed = time.perf_counter() - start
                machine = MachineLoad.between(counters, MachineCounters.now())
                # The last 250s are in; let their ledger marks land before stopping workers.
                wait_for(lambda: sent_count_url(db_url) >= config.subscribers, timeout=30)
            planner_cpu = sum(
                v - planner_before.get(pid, 0.0) for pid, v in planner_sampler.cpu.items()
            )
            cpu = planner_cpu + sum(v - cpu_before.get(pid, 0.0) for pid, v in sampler.cpu.items())
            # Backends started during the run count from zero.
            service_cpu = {
                kind: sum(
                    v - services_before[kind].get(pid, 0.0)
                    for pid, v in cpu_seconds(service_processes(sink.pid)[kind]).items()
                )
                for kind in services
            }
            peak_rss = max(sampler.peak_rss.values(), default=0)
            planner_rss = max(planner_sampler.peak_rss.values(), default=0)
            peak_anonymous = max(sampler.peak_anonymous.values(), default=0)
            planner_anonymous = max(planner_sampler.peak_anonymous.values(), default=0)
            resources.stop_workers()
        finally:
            app.close()
        engine = make_engine(db_url)
        sessions = make_session_factory(engine)
        delivered, plan_s = sent_count(sessions), planning_seconds(sessions)
        variants = variant_count(sessions)
        deliveries, distinct = distinct_selections(sessions, prepared.edition_id)
        engine.dispose()
        accepted, recipients, duplicates, accepted_bytes = sink.stats()
        payloads = sample_messages(settings)
        log("running the raw SMTP baseline...")
        baseline = raw_baseline(
            sink,
            payloads=payloads,
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
        baseline_emails_per_second=baseline.emails_per_second,
        ratio_to_baseline=(
            rate / baseline.emails_per_second if baseline.emails_per_second else 0.0
        ),
        variants=variants,
        message_bytes_avg=accepted_bytes / accepted if accepted else 0.0,
        notes=notes,
        postgres_cpu_ms_per_email=1000 * service_cpu["postgres"] / max(1, recipients),
        redis_cpu_ms_per_email=1000 * service_cpu["redis"] / max(1, recipients),
        sink_cpu_ms_per_email=1000 * service_cpu["sink"] / max(1, recipients),
        deliveries=deliveries,
        distinct_selections=distinct,
        distinct_share=distinct / deliveries if deliveries else 0.0,
        feedback_histories=config.feedback_histories,
        feedback_marks=prepared.feedback_marks,
        pool_papers=prepared.pool,
        arxiv_papers=prepared.arxiv_papers,
        typed_topics=prepared.typed_topics,
        planner_cpu_seconds=planner_cpu,
        planner_peak_rss_mb=planner_rss / 2**20,
        peak_anonymous_mb_per_worker=peak_anonymous / 2**20,
        planner_peak_anonymous_mb=planner_anonymous / 2**20,
        baseline_messages=len(payloads),
        baseline_bytes_avg=sum(map(len, payloads)) / len(payloads),
        machine=machine,
        baseline_machine=baseline.machine,
        baseline_sent=baseline.messages,
    )


def seed(
    config: BenchConfig, settings: Settings, *, log: Callable[[str], None]
) -> tuple[Prepared, float]:
    """Schema, edition, readers (and their feedback), said when done; and how long it took."""
    started = time.perf_counter()
    prepared = prepare_run(
        settings,
        subscribers=config.subscribers,
        seed=config.seed,
        feedback_histories=config.feedback_histories,
        arxiv_pool=config.arxiv_pool,
        typed_topics=config.typed_topics,
    )
    seconds = time.perf_counter() - started
    log(seeded_line(config, prepared, seconds))
    return prepared, seconds


def seeded_line(config: BenchConfig, prepared: Prepared, seconds: float) -> str:
    marks = f" and {prepared.feedback_marks:,} feedback marks" if config.feedback_histories else ""
    pool = f", a pool of {pool_text(prepared.pool, prepared.arxiv_papers)}"
    topics = f", {prepared.typed_topics:,} typed topics" if prepared.typed_topics else ""
    return f"seeded {config.subscribers:,} subscribers{marks}{pool}{topics} in {seconds:.1f} s"


@dataclass
class CountingDispatcher:
    """Planning's dispatcher in --plan-only: counts the batches it would queue, sends none."""

    queued: bool = True
    batches: int = 0
    rows: int = 0

    def send_batch(self, delivery_ids: list[int]) -> None:
        self.batches += 1
        self.rows += len(delivery_ids)

    def send_confirmation(self, subscriber_id: int) -> None:
        raise RuntimeError("the plan-only bench sends no confirmations")

    def ingest(self) -> str | None:
        raise RuntimeError("the plan-only bench ingests nothing")


def run_plan_only(config: BenchConfig, *, log: Callable[[str], None] = print) -> PlanResult:
    """Prepare and seed, then run the real planning stage in this process, publishing to
    a dispatcher that only counts: planning's time, CPU and memory, and nothing else."""
    with scratch_run(config, log=log) as (_resources, db_url):
        settings = bench_settings(db_url, config.redis_url, None, config.batch_size)
        prepared, seed_seconds = seed(config, settings, log=log)
        log("planning in this process...")
        # What a worker process imports once, at its first plan: timed on its own, so the
        # figure below is planning (a long-running worker pays this once, not per plan).
        started = time.perf_counter()
        importlib.import_module("papermail.pipeline.tfidf")
        model_import_seconds = time.perf_counter() - started
        gc_tuning.tune()  # as every Celery pool process is (workers/celery_app.py)
        w = Wiring(settings)
        try:
            counter = CountingDispatcher()
            me = psutil.Process()
            postgres = service_processes(None)["postgres"]
            with ProcessSampler([me], interval=0.1) as sampler:
                cpu_before = sum(sampler.cpu.values())
                postgres_before = cpu_seconds(postgres)
                start = time.perf_counter()
                reports = stages.plan(
                    w,
                    dispatcher=counter,
                    now=utcnow(),
                    due_only=False,
                    edition_ids=[prepared.edition_id],
                )
                wall = time.perf_counter() - start
            cpu = sum(sampler.cpu.values()) - cpu_before
            postgres_cpu = sum(
                v - postgres_before.get(pid, 0.0)
                for pid, v in cpu_seconds(service_processes(None)["postgres"]).items()
            )
            plan_s = planning_seconds(w.sessions)
            deliveries, distinct = distinct_selections(w.sessions, prepared.edition_id)
        finally:
            w.engine.dispose()
            w.redis.close()
    planned = sum(r.planned for r in reports)
    notes = []
    if planned != config.subscribers:
        notes.append(f"planned {planned:,} rows for {config.subscribers:,} subscribers")
    if counter.rows != planned:
        notes.append(f"batches carried {counter.rows:,} rows, not the {planned:,} planned")
    return PlanResult(
        subscribers=config.subscribers,
        pool_papers=prepared.pool,
        planned=planned,
        batches=counter.batches,
        batch_rows=counter.rows,
        deliveries=deliveries,
        distinct_selections=distinct,
        distinct_share=distinct / deliveries if deliveries else 0.0,
        planning_seconds=plan_s,
        wall_seconds=wall,
        cpu_seconds=cpu,
        postgres_cpu_seconds=postgres_cpu,
        peak_rss_mb=max(sampler.peak_rss.values(), default=0) / 2**20,
        peak_anonymous_mb=max(sampler.peak_anonymous.values(), default=0) / 2**20,
        feedback_histories=config.feedback_histories,
        feedback_marks=prepared.feedback_marks,
        arxiv_papers=prepared.arxiv_papers,
        typed_topics=prepared.typed_topics,
        seed_seconds=seed_seconds,
        model_import_seconds=model_import_seconds,
        notes=notes,
    )
