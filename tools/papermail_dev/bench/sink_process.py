"""The SMTP sink in a process of its own, driven over a pipe."""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection

from papermail_dev.bench.sampling import wait_for
from papermail_dev.smtpsink import SmtpSink


def _sink_main(conn: Connection, ready: Connection) -> None:
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
