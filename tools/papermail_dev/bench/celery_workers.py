"""Celery worker processes for a run, started as production starts them.

Each worker is the leader of a process group of its own (its prefork pool is in it), so
stopping one is: SIGTERM to its main process (a warm shutdown drains the pool), then
SIGKILL to whatever is left of the group. A pool child orphaned by a killed parent would
otherwise go on consuming the next run's tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import psutil
from celery import Celery

from papermail.dispatch import QUEUES
from papermail_dev.bench.sampling import wait_for

# The worker command line, as `pgrep -f` / `pkill -f` can match it (the -n name follows).
WORKER_PATTERN = "workers.celery_app worker.*-n bench"


def start_worker(
    env: dict[str, str],
    *,
    name: str,
    concurrency: int,
    log_path: Path,
    queues: tuple[str, ...] = QUEUES,
) -> psutil.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:  # the child has its own copy
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
                ",".join(queues),
            ],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )


def wait_workers(app: Celery, count: int, timeout: float) -> None:
    if not wait_for(
        lambda: len(app.control.ping(timeout=1.0) or []) >= count, timeout=timeout, interval=0.5
    ):
        raise RuntimeError("Celery workers did not come up")


def group_members(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group (zombies do not count: they run nothing)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def kill_group(pgid: int, *, reap: psutil.Popen | None = None, timeout: float = 10.0) -> None:
    """SIGKILL every process left in the group; return once none runs."""
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            with suppress(psutil.Error):
                reap.poll()  # our own child: reaped, so it stops counting
        members = group_members(pgid)
        if not members:
            return
        if time.monotonic() > deadline:
            pids = ", ".join(str(p.pid) for p in members)
            raise RuntimeError(f"process group {pgid} survived SIGKILL: pids {pids}")
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)


def stop_workers(procs: list[psutil.Popen], *, grace: float = 30.0) -> None:
    """Warm shutdown, then SIGKILL for each worker's whole process group after ``grace``."""
    for proc in procs:
        with suppress(psutil.Error, ProcessLookupError):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # warm shutdown: the main process drains its pool
    deadline = time.monotonic() + grace
    for proc in procs:
        with suppress(psutil.TimeoutExpired, psutil.Error):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    errors = []
    for proc in procs:
        try:
            kill_group(proc.pid, reap=proc)  # start_new_session: the group id is its pid
        except RuntimeError as exc:
            errors.append(str(exc))
    if errors:
        raise RuntimeError("; ".join(errors))


def answering_workers(broker_url: str, *, timeout: float = 1.0) -> dict[str, int | None]:
    """Workers that answer a ping on this broker, with their pids when they say."""
    app = Celery("papermail-bench-probe", broker=broker_url, set_as_current=False)
    try:
        names = [name for reply in app.control.ping(timeout=timeout) or [] for name in reply]
        if not names:
            return {}
        stats = app.control.inspect(destination=names, timeout=timeout).stats() or {}
        return {name: stats.get(name, {}).get("pid") for name in names}
    finally:
        app.close()


def refusal(broker_url: str, workers: dict[str, int | None]) -> str:
    """Why a run cannot start while these workers answer on its broker, and what to do."""
    listed = ", ".join(
        f"{name} (pid {pid})" if pid else name for name, pid in sorted(workers.items())
    )
    pids = " ".join(str(pid) for pid in sorted(p for p in workers.values() if p))
    stop = f"kill -TERM {pids}, or " if pids else ""
    return (
        f"Celery workers already answer on {broker_url}: {listed}. They belong to a bench run "
        "still in progress or to one killed before it could stop them, and would take this "
        "run's tasks. Wait for that run, or stop them: "
        f"{stop}pkill -f '{WORKER_PATTERN}' (every bench worker on this machine); "
        "or give this run another --redis-url"
    )
