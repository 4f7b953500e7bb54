"""`papermail bench`: deliver one edition to N synthetic subscribers on the real topology.

PostgreSQL, Redis, Celery worker processes and a loopback SMTP sink, all on this
machine. Planning runs as the Celery task does in production. In the same run,
against the same sink, a raw baseline sends pre-built bytes over reused smtplib
connections: the ratio says how much the pipeline costs over bare SMTP.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import multiprocessing
import random
import secrets
import smtplib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import psycopg
import redis as redis_lib
from sqlalchemy import func, select

from papermail.config import Settings
from papermail.db import make_engine, make_session_factory, session_scope
from papermail.dbadmin import upgrade
from papermail.models import Delivery, DeliveryStatus, EditionKind, JobRun
from papermail.pipeline import build_edition, ingest_result
from papermail.smtpsink import SmtpSink
from papermail.sources.hf import SAMPLE_DAY, load_sample

TOPICS = (
    "diffusion",
    "reinforcement learning",
    "video",
    "scaling law",
    "robotics",
    "agents",
    "code",
    "reasoning",
    "multimodal",
    "benchmark",
    "speech",
    "3d",
)


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


# --- setup ------------------------------------------------------------------------------------


@contextmanager
def scratch_database(admin_url: str, *, prefix: str = "papermail_bench") -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed_subscribers(db_url: str, *, count: int, seed: int) -> None:
    """COPY synthetic subscribers with mixed preferences (a million in seconds)."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).isoformat()
    url = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    columns = (
        "email, status, frequency, max_papers, topics, follow_organizations, "
        "follow_authors, format, timezone, send_hour, created_at, confirmed_at, "
        "bounce_count, token_version"
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
            for n in range(count):
                topics = rng.sample(TOPICS, rng.choice((0, 0, 1, 1, 2)))
                copy.write_row(
                    (
                        f"reader{n}@bench.example.org",
                        "active",
                        "daily",
                        rng.choice((5, 10, 10, 15)),
                        json.dumps(topics),
                        "[]",
                        "[]",
                        "text" if rng.random() < 0.2 else "html",
                        "UTC",
                        0,
                        now,
                        now,
                        0,
                        1,
                    )
                )
        conn.commit()
        # A live database has statistics for its subscribers; a bulk COPY leaves none.
        conn.execute("ANALYZE subscribers")


# --- measuring -------------------------------------------------------------------------------


def _sink_main(conn, ready) -> None:  # type: ignore[no-untyped-def]
    with SmtpSink(keep_messages=False) as sink:
        ready.send((sink.host, sink.port))
        while True:
            command = conn.recv()
            if command == "stop":
                return
            received = sink.received
            conn.send((sink.total, len(received), sum(c - 1 for c in received.values() if c > 1)))


class SinkProcess:
    """The SMTP sink in its own process, so it never shares a GIL with a measured client."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        ready_parent, ready_child = ctx.Pipe()
        self._proc = ctx.Process(target=_sink_main, args=(child, ready_child), daemon=True)
        self._proc.start()
        self.pid = self._proc.pid
        self.host, self.port = ready_parent.recv()

    def stats(self) -> tuple[int, int, int]:
        """(messages accepted, distinct recipients, duplicate copies)."""
        self._conn.send("stats")
        return self._conn.recv()

    @property
    def total(self) -> int:
        return self.stats()[0]

    def wait_for(self, count: int, timeout: float) -> bool:
        return wait_for(lambda: self.total >= count, timeout=timeout, interval=0.2)

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(timeout=10)


def service_processes(sink_pid: int) -> dict[str, list[psutil.Process]]:
    """The other CPU consumers of a run: PostgreSQL, Redis and the SMTP sink."""
    found: dict[str, list[psutil.Process]] = {"postgres": [], "redis": [], "sink": []}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name.startswith("postgres"):
            found["postgres"].append(proc)
        elif name.startswith("redis-server"):
            found["redis"].append(proc)
    found["sink"].append(psutil.Process(sink_pid))
    return found


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


class ProcessSampler:
    """Samples CPU and RSS of worker process trees while the run goes on."""

    def __init__(self, roots: list[psutil.Process]) -> None:
        self.roots = roots
        self.peak_rss: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list[psutil.Process]:
        procs = []
        for root in self.roots:
            try:
                procs += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return procs

    def sample(self) -> None:
        for proc in self._procs():
            try:
                rss = proc.memory_info().rss
                times = proc.cpu_times()
            except psutil.Error:
                continue
            self.peak_rss[proc.pid] = max(self.peak_rss.get(proc.pid, 0), rss)
            self.cpu[proc.pid] = times.user + times.system

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def __enter__(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _baseline_sender(host: str, port: int, count: int, data: bytes, go, done) -> None:  # type: ignore[no-untyped-def]
    client = smtplib.SMTP(host, port)
    go.wait()  # connected and imported: only the sending is timed
    for n in range(count):
        client.sendmail("bench@bench.example.org", [f"baseline{n}@bench.example.org"], data)
    done.put(time.perf_counter())
    client.quit()


def raw_baseline(sink: SinkProcess, *, data: bytes, connections: int, messages: int) -> float:
    """Pre-built bytes over reused smtplib connections, one process each: emails/s."""
    per = max(1, messages // connections)
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_baseline_sender, args=(sink.host, sink.port, per, data, go, done))
        for _ in range(connections)
    ]
    for proc in procs:
        proc.start()
    time.sleep(3)  # let every process import and connect
    start = time.perf_counter()
    go.set()
    finished = max(done.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    return per * connections / (finished - start)


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def sent_count(sessions) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status == DeliveryStatus.SENT)
            )
            or 0
        )


def sent_count_url(db_url: str) -> int:
    url = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()
    return int(row[0]) if row else 0


def planning_seconds(sessions) -> float:  # type: ignore[no-untyped-def]
    with sessions() as session:
        run = session.scalar(
            select(JobRun).where(JobRun.stage == "planning").order_by(JobRun.id.desc()).limit(1)
        )
    if run is None or run.finished_at is None:
        return float("nan")
    return (run.finished_at - run.started_at).total_seconds()


def bench_settings(db_url: str, redis_url: str, sink: SinkProcess, batch_size: int) -> Settings:
    return Settings(
        _env_file=None,
        database_url=db_url,
        redis_url=redis_url,
        smtp_host=sink.host,
        smtp_port=sink.port,
        base_url="https://papers.bench.example.org",
        mail_from="papermail <digest@papers.bench.example.org>",
        secret_key=secrets.token_urlsafe(32),
        batch_size=batch_size,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    return {
        "PAPERMAIL_DATABASE_URL": settings.database_url or "",
        "PAPERMAIL_REDIS_URL": settings.redis_url or "",
        "PAPERMAIL_SMTP_HOST": settings.smtp_host,
        "PAPERMAIL_SMTP_PORT": str(settings.smtp_port),
        "PAPERMAIL_BASE_URL": settings.base_url,
        "PAPERMAIL_MAIL_FROM": settings.mail_from,
        "PAPERMAIL_SECRET_KEY": settings.secret_key.get_secret_value(),
        "PAPERMAIL_BATCH_SIZE": str(settings.batch_size),
        "PAPERMAIL_LOG_LEVEL": "WARNING",
        "PAPERMAIL_LEDGER_ASYNC_COMMIT": "1" if settings.ledger_async_commit else "0",
    }


def prepare(settings: Settings, *, subscribers: int, seed: int) -> int:
    """Schema, the sample edition, N subscribers. Returns the edition id."""
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    ingest_result(sessions, result=load_sample(), now=dt.datetime.now(dt.UTC))
    seed_subscribers(settings.effective_database_url, count=subscribers, seed=seed)
    summary = build_edition(
        sessions,
        day=SAMPLE_DAY + dt.timedelta(days=1),
        kind=EditionKind.DAILY,
        size=50,
        rank_hour=6,
        clock=lambda: dt.datetime.now(dt.UTC),
    )
    with session_scope(sessions):
        pass
    engine.dispose()
    assert summary.edition_id is not None
    return summary.edition_id


def flush_redis(url: str) -> None:
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    client.close()


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


# --- the run ---------------------------------------------------------------------------------


def start_worker(
    env: dict[str, str], *, name: str, concurrency: int, log_path: Path
) -> psutil.Popen:
    import os
    import subprocess
    import sys

    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 (the child keeps it)
    return psutil.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.celery_app",
            "worker",
            "--loglevel=WARNING",
            f"--concurrency={concurrency}",
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "-Q",
            "papermail.pipeline,papermail.send",
        ],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_workers(app, count: int, timeout: float) -> None:  # type: ignore[no-untyped-def]
    if not wait_for(
        lambda: len(app.control.ping(timeout=1.0) or []) >= count, timeout=timeout, interval=0.5
    ):
        raise RuntimeError("Celery workers did not come up")


def stop_workers(procs: list[psutil.Popen]) -> None:
    import os
    import signal

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: the main process drains its pool
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except psutil.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def sample_message(settings: Settings) -> bytes:
    """One real digest as the pipeline builds it: the baseline's payload."""
    from papermail.runtime import Runtime

    rt = Runtime(settings)
    with rt.sessions() as session:
        row = session.execute(
            select(Delivery.variant_key, Delivery.edition_id).order_by(Delivery.id).limit(1)
        ).one()
        from papermail.models import Edition

        edition = session.get(Edition, row.edition_id)
        template = rt.templates().get(session, row.variant_key, edition=edition)
    url = rt.links.unsubscribe(1, 1)
    data = template.render(
        to="baseline@bench.example.org",
        message_id="<baseline@bench>",
        date=dt.datetime.now(dt.UTC),
        unsubscribe_url=url,
        values={
            "email": "baseline@bench.example.org",
            "unsubscribe_url": url,
            "preferences_url": rt.links.preferences(1, 1),
        },
    )
    rt.engine.dispose()
    return data


def run_bench(config: BenchConfig, *, log: Callable[[str], None] = print) -> BenchResult:
    from workers.celery_app import make_celery

    flush_redis(config.redis_url)
    with scratch_database(config.pg_admin_url) as db_url, SinkProcess() as sink:
        settings = bench_settings(db_url, config.redis_url, sink, config.batch_size)
        settings = settings.model_copy(update={"ledger_async_commit": config.ledger_async_commit})
        started = time.perf_counter()
        prepare(settings, subscribers=config.subscribers, seed=config.seed)
        log(f"seeded {config.subscribers:,} subscribers in {time.perf_counter() - started:.1f} s")
        app = make_celery(settings)
        env = settings_env(settings)
        procs = [
            start_worker(
                env,
                name=f"bench{i}@%h",
                concurrency=config.concurrency,
                log_path=config.log_dir / f"worker-{i}.log",
            )
            for i in range(config.workers)
        ]
        try:
            wait_workers(app, config.workers, timeout=60)
            with ProcessSampler([psutil.Process(p.pid) for p in procs]) as sampler:
                cpu_before = dict(sampler.cpu)
                services = service_processes(sink.pid)
                services_before = {k: cpu_seconds(v) for k, v in services.items()}
                start = time.perf_counter()
                app.send_task("papermail.plan_deliveries", kwargs={"due_only": False})
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
        finally:
            stop_workers(procs)
            app.close()
        engine = make_engine(db_url)
        sessions = make_session_factory(engine)
        delivered, plan_s = sent_count(sessions), planning_seconds(sessions)
        with sessions() as session:
            from papermail.models import Variant

            variants = session.scalar(select(func.count()).select_from(Variant)) or 0
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
    flush_redis(config.redis_url)
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
