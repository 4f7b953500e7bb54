"""A run's lifetime: what it started and created, and one way for all of it to go away.

Whatever ends a run (it finishes, it times out, it fails, Ctrl-C, SIGTERM from `timeout`
or a CI runner, SIGHUP from a closed terminal), the same cleanup runs, in this order:
the Celery workers (each one's whole process group), the SMTP sink process, the scratch
database, the bench's Redis database. SIGTERM and SIGHUP become ``Terminated`` in the
main thread (Ctrl-C is KeyboardInterrupt already), so ``finally`` blocks run; while the
cleanup runs, further signals are noted, not raised, so a second Ctrl-C cannot cut it
short. Only SIGKILL leaves things behind; the next run then refuses to start while the
old workers answer on its broker (see ``celery_workers.refusal``).
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from urllib.parse import urlsplit, urlunsplit

import psutil

from papermail.dispatch import QUEUES
from papermail_dev.bench.celery_workers import (
    WORKER_PATTERN,
    kill_group,
    start_worker,
    stop_workers,
)
from papermail_dev.bench.scratch import create_database, drop_database, flush_redis
from papermail_dev.bench.sink_process import SinkProcess

RAISED = (signal.SIGTERM, signal.SIGHUP)
DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(SystemExit):
    """SIGTERM or SIGHUP, raised in the main thread; exits 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Terminated`` in the main thread while this lasts."""
    if not _in_main_thread():  # only the main thread may set handlers (nor gets signals)
        yield
        return

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = {
        signum: signal.signal(signum, terminate)
        for signum in RAISED
        if signal.getsignal(signum) is not signal.SIG_IGN  # nohup's SIGHUP stays ignored
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP are noted (yielded list), not raised, while this lasts."""
    received: list[int] = []
    if not _in_main_thread():
        yield received
        return

    def note(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        os.write(2, f"\n{name}: the bench is cleaning up, a few seconds more...\n".encode())

    previous = {signum: signal.signal(signum, note) for signum in DEFERRED}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def redact(url: str) -> str:
    """The URL without its password, to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class RunResources:
    """What one run started or created; leaving the ``with`` stops and drops all of it.

    Each thing is recorded before it exists (the database's name before CREATE), so an
    interruption at any point leaves nothing the cleanup does not know of.
    """

    def __init__(
        self, *, redis_url: str, pg_admin_url: str, log: Callable[[str], None] = print
    ) -> None:
        self.redis_url = redis_url
        self.pg_admin_url = pg_admin_url
        self.log = log
        self.workers: list[psutil.Popen] = []
        self.sink: SinkProcess | None = None
        self.database: str | None = None
        self.closed = False

    def create_database(self, name: str) -> str:
        self.database = name
        return create_database(self.pg_admin_url, name)

    def start_sink(self) -> SinkProcess:
        self.sink = SinkProcess()
        return self.sink

    def start_worker(
        self,
        env: dict[str, str],
        *,
        name: str,
        concurrency: int,
        log_path: Path,
        queues: tuple[str, ...] = QUEUES,
    ) -> psutil.Popen:
        proc = start_worker(
            env, name=name, concurrency=concurrency, log_path=log_path, queues=queues
        )
        self.workers.append(proc)
        return proc

    def stop_workers(self, *, grace: float = 30.0) -> None:
        workers, self.workers = self.workers, []
        try:
            stop_workers(workers, grace=grace)
        finally:
            _kill_stray_workers()

    def close(self, *, interrupted: bool = False) -> None:
        """Stop and drop everything, each step whatever became of the one before."""
        if self.closed:
            return
        self.closed = True
        steps: list[tuple[str, Callable[[], None]]] = [
            # Interrupted, nothing of the run matters any more: a short warm shutdown.
            ("stop the Celery workers", lambda: self.stop_workers(grace=5 if interrupted else 30)),
            ("stop the SMTP sink", self._stop_sink),
            ("drop the scratch database", self._drop_database),
            (f"flush {redact(self.redis_url)}", lambda: flush_redis(self.redis_url)),
        ]
        failed = []
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # the next steps still run
                failed.append(f"{what}: {exc}")
        for failure in failed:
            self.log(f"cleanup: could not {failure}")

    def _stop_sink(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.close()

    def _drop_database(self) -> None:
        name, self.database = self.database, None
        if name is not None:
            drop_database(self.pg_admin_url, name)

    def __enter__(self) -> RunResources:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with signals_deferred():
            if exc_type is not None and not issubclass(exc_type, Exception):
                why = str(exc) if exc is not None and str(exc) else exc_type.__name__
                self.log(f"interrupted ({why}): stopping and cleaning up")
            self.close(interrupted=exc_type is not None)


def _kill_stray_workers() -> None:
    """A bench worker among our descendants that outlived its main process: its group goes."""
    pattern = re.compile(WORKER_PATTERN)
    try:
        descendants = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for proc in descendants:
        try:
            pgid = os.getpgid(proc.pid)
            if pgid != os.getpgrp() and pattern.search(" ".join(proc.cmdline())):
                kill_group(pgid)
        except (ProcessLookupError, psutil.Error):
            continue
