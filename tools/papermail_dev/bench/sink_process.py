"""The SMTP sink in a process of its own, driven over a pipe."""

from __future__ import annotations

import multiprocessing
import signal
from contextlib import suppress
from multiprocessing.connection import Connection

from papermail_dev.bench.sampling import wait_for
from papermail_dev.smtpsink import SmtpSink


def _sink_main(conn: Connection, ready: Connection) -> None:
    # Ctrl-C reaches the whole foreground process group: the run stops this process itself,
    # after its workers, so it must not die first (and spill a traceback) on SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with SmtpSink(keep_messages=False) as sink:
        ready.send((sink.host, sink.port))
        while True:
            try:
                command = conn.recv()
            except EOFError:  # the run is gone (killed with SIGKILL): so is its sink
                return
            if command == "stop":
                return
            received = sink.received
            duplicates = sum(c - 1 for c in received.values() if c > 1)
            conn.send((sink.total, len(received), duplicates, sink.bytes_accepted))


class SinkProcess:
    """The SMTP sink in its own process, so it never shares a GIL with a measured client."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        ready_parent, ready_child = ctx.Pipe()
        self._proc = ctx.Process(target=_sink_main, args=(child, ready_child), daemon=True)
        self._proc.start()
        assert self._proc.pid is not None  # started
        self.pid: int = self._proc.pid
        try:
            self.host, self.port = ready_parent.recv()
        except BaseException:  # interrupted while it starts: nobody else can stop it
            self._proc.kill()
            self._proc.join(timeout=5)
            raise
        finally:
            ready_parent.close()

    def stats(self) -> tuple[int, int, int, int]:
        """(messages accepted, distinct recipients, duplicate copies, bytes accepted)."""
        self._conn.send("stats")
        return self._conn.recv()

    @property
    def total(self) -> int:
        return self.stats()[0]

    def wait_for(self, count: int, timeout: float) -> bool:
        return wait_for(lambda: self.total >= count, timeout=timeout, interval=0.2)

    def __enter__(self) -> SinkProcess:
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the sink process, whatever state it is in; return once it is gone."""
        if self._proc.is_alive():
            with suppress(OSError):  # BrokenPipeError: it died already
                self._conn.send("stop")
            self._proc.join(timeout=timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._conn.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
