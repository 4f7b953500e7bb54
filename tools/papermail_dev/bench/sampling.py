"""Watching a run: polling, the CPU and memory of processes, and counts in the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import psycopg
from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import Delivery, DeliveryStatus, JobRun, Variant


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


# --- processes -------------------------------------------------------------------------------


def service_processes(sink_pid: int | None) -> dict[str, list[psutil.Process]]:
    """The other CPU consumers of a run: PostgreSQL, Redis and the SMTP sink (if any)."""
    found: dict[str, list[psutil.Process]] = {"postgres": [], "redis": [], "sink": []}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name.startswith("postgres"):
            found["postgres"].append(proc)
        elif name.startswith("redis-server"):
            found["redis"].append(proc)
    if sink_pid is not None:
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
    """Samples CPU and RSS of process trees (the workers', or the planner's) while the run
    goes on, every ``interval`` seconds.

    Beside RSS it keeps each process's anonymous resident memory (RSS less the pages mapped
    from files): its heap and stacks, some pages still shared with the process it was
    forked from (a pool process's parent). The rest is library code and data mapped from
    disk, which the page cache shares between processes, and how much of it a process has
    resident depends on what the cache held when it faulted the pages in: numpy alone,
    imported twice from two installs of the same version, came to 26 and 32 MB of RSS,
    13.5 MB of it anonymous both times.
    """

    def __init__(self, roots: list[psutil.Process], *, interval: float = 0.5) -> None:
        self.roots = roots
        self.interval = interval
        self.peak_rss: dict[int, int] = {}
        self.peak_anonymous: dict[int, int] = {}
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
                memory = proc.memory_info()
                times = proc.cpu_times()
            except psutil.Error:
                continue
            # On Linux ``shared`` is the resident pages mapped from files (RssFile + RssShmem).
            anonymous = memory.rss - memory.shared
            self.peak_rss[proc.pid] = max(self.peak_rss.get(proc.pid, 0), memory.rss)
            self.peak_anonymous[proc.pid] = max(self.peak_anonymous.get(proc.pid, 0), anonymous)
            self.cpu[proc.pid] = times.user + times.system

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# --- the whole machine ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MachineCounters:
    """Every CPU's time since boot, in seconds, and the context switches: psutil's view of
    /proc/stat. Two of them, taken around a window, give that window's ``MachineLoad``."""

    total: float
    idle: float  # idle and waiting for I/O: time nothing could run
    kernel: float  # system calls, interrupts and softirqs
    context_switches: int

    @classmethod
    def now(cls) -> MachineCounters:
        times = psutil.cpu_times()
        # Linux counts guest time inside user time already: it is not added again.
        parts = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
        return cls(
            total=sum(getattr(times, name, 0.0) for name in parts),
            idle=times.idle + getattr(times, "iowait", 0.0),
            kernel=times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0),
            context_switches=psutil.cpu_stats().ctx_switches,
        )


@dataclass(frozen=True, slots=True)
class MachineLoad:
    """What the whole machine did in a window: how busy its CPUs were, how much of their
    time went to the kernel, and how many context switches there were.

    The ratio to the baseline is decided by CPU: these say whether the cores were full,
    and how much of them went to moving each email between processes.
    """

    busy_share: float  # of all CPUs' time in the window
    kernel_share: float  # of all CPUs' time in the window
    context_switches: int

    @classmethod
    def between(cls, before: MachineCounters, after: MachineCounters) -> MachineLoad:
        total = after.total - before.total
        if total <= 0:
            return cls(busy_share=0.0, kernel_share=0.0, context_switches=0)
        return cls(
            busy_share=1.0 - (after.idle - before.idle) / total,
            kernel_share=(after.kernel - before.kernel) / total,
            context_switches=after.context_switches - before.context_switches,
        )

    def describe(self, emails: int) -> str:
        """Like "95% busy, 29% kernel, 14.2 context switches/email"."""
        switches = self.context_switches / emails if emails else 0.0
        return (
            f"{100 * self.busy_share:.0f}% busy, {100 * self.kernel_share:.0f}% kernel, "
            f"{switches:.1f} context switches/email"
        )


# --- the database ------------------------------------------------------------------------------


def sent_count(sessions: sessionmaker[Session]) -> int:
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


def planning_seconds(sessions: sessionmaker[Session]) -> float:
    with sessions() as session:
        run = session.scalar(
            select(JobRun).where(JobRun.stage == "planning").order_by(JobRun.id.desc()).limit(1)
        )
    if run is None or run.finished_at is None:
        return float("nan")
    return (run.finished_at - run.started_at).total_seconds()


def variant_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Variant)) or 0


def distinct_selections(sessions: sessionmaker[Session], edition_id: int) -> tuple[int, int]:
    """(deliveries, distinct selections) of the edition: count(*), count(DISTINCT key)."""
    with sessions() as session:
        row = session.execute(
            select(func.count(), func.count(distinct(Delivery.variant_key))).where(
                Delivery.edition_id == edition_id
            )
        ).one()
    return int(row[0]), int(row[1])
