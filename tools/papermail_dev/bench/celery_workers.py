"""Celery worker processes for a run, started as production starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from celery import Celery

from papermail.dispatch import QUEUES
from papermail_dev.bench.sampling import wait_for


def start_worker(
    env: dict[str, str], *, name: str, concurrency: int, log_path: Path
) -> psutil.Popen:
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
            ",".join(QUEUES),
        ],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_workers(app: Celery, count: int, timeout: float) -> None:
    if not wait_for(
        lambda: len(app.control.ping(timeout=1.0) or []) >= count, timeout=timeout, interval=0.5
    ):
        raise RuntimeError("Celery workers did not come up")


def stop_workers(procs: list[psutil.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: the main process drains its pool
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except psutil.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
