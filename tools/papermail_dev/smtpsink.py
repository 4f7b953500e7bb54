"""A fast loopback SMTP sink for tests, benchmarks and operators.

``SmtpSink`` accepts mail and counts it; nothing is relayed. It is a hand-written
asyncio protocol rather than aiosmtpd because benchmarks push thousands of
~60 KB messages a second through it: DATA is handled by searching a buffer for
the ``CRLF.CRLF`` terminator instead of feeding every line through Python (the
protocol is in papermail_dev.smtpsession; this module is the server around it).

A ``FaultPlan`` makes it misbehave on purpose (4xx replies, dropped connections,
550 for chosen recipients) so retry logic can be tested end to end.

    python -m papermail_dev.smtpsink --port 2525     # foreground; Ctrl-C prints totals
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType

from papermail_dev.smtpsession import DROP, R421, R451, FaultPlan, SmtpSession

__all__ = ["FaultPlan", "ReceivedMessage", "SmtpSink", "main"]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as the client meant it: CRLF line endings, dot-stuffing removed


class SmtpSink:
    """An SMTP server on a background thread that accepts and counts everything."""

    def __init__(
        self,
        *,
        keep_messages: bool = True,
        faults: FaultPlan | None = None,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.keep_messages = keep_messages
        self.faults = faults  # read at every command, so a test may change it mid-run
        self.host = host
        self.port = port
        self._rng = random.Random(seed)  # only used on the loop thread
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._received: Counter[str] = Counter()
        self._messages: list[ReceivedMessage] = []
        self._total = 0
        self._bytes = 0
        self._connections = 0
        self._sessions: set[SmtpSession] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> SmtpSink:
        if self._thread is not None:
            raise RuntimeError("SmtpSink already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        # daemon: a test that forgets stop() must not hang the interpreter at exit
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="smtpsink", daemon=True
        )
        # The serving thread inherits a mask that blocks Ctrl-C and SIGTERM, so the kernel
        # delivers them to the main thread. Otherwise it may pick this thread, and a main
        # thread blocked in sleep() would not notice for as long as it sleeps.
        stopping = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    def disconnect_all(self) -> None:
        """Drop every open client connection now, as a restarting server would."""
        loop = self._loop
        if loop is None:
            return

        async def abort_all() -> None:
            for session in list(self._sessions):
                session.abort()
            await asyncio.sleep(0)  # abort() closes the sockets on the next loop iteration

        asyncio.run_coroutine_threadsafe(abort_all(), loop).result(timeout=10)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(
                loop.create_server(lambda: SmtpSession(self), self.host, self.port)
            )
        except BaseException as exc:  # e.g. port in use: hand it to start()
            failure.append(exc)
            loop.close()
            ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for session in list(self._sessions):
                session.abort()
            loop.run_until_complete(server.wait_closed())
            loop.run_until_complete(asyncio.sleep(0))  # let connection_lost callbacks run
            loop.close()
            self._loop = None

    # -- what arrived (snapshots, safe from any thread) -------------------------

    @property
    def received(self) -> Counter[str]:
        with self._lock:
            return self._received.copy()

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    @property
    def bytes_accepted(self) -> int:
        """The accepted messages' bytes as they came over the wire."""
        with self._lock:
            return self._bytes

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` messages were accepted; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._total >= count, timeout=timeout)

    # -- called on the loop thread by sessions -----------------------------------

    def _opened(self, session: SmtpSession) -> None:
        self._sessions.add(session)
        with self._lock:
            self._connections += 1

    def _closed(self, session: SmtpSession) -> None:
        self._sessions.discard(session)

    def _accept(self, mail_from: str, rcpt_tos: list[str], data: bytes | None, size: int) -> None:
        with self._changed:
            self._total += 1
            self._bytes += size
            self._received.update(rcpt_tos)
            if data is not None:
                self._messages.append(ReceivedMessage(mail_from, tuple(rcpt_tos), data))
            self._changed.notify_all()

    def _fault(self) -> bytes | None:
        """Decide whether this MAIL/RCPT/end-of-DATA misbehaves: a reply, DROP or None."""
        plan = self.faults
        if plan is None:
            return None
        if plan.disconnect_rate and self._rng.random() < plan.disconnect_rate:
            return DROP
        if plan.transient_rate and self._rng.random() < plan.transient_rate:
            return self._rng.choice((R421, R451))
        return None


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m papermail_dev.smtpsink", description="Accept and count SMTP mail."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--transient-rate", type=float, default=0.0)
    parser.add_argument("--disconnect-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    # Ctrl-C stops it whatever this process inherited: a parent that ignores SIGINT (as the
    # bench's sink process does) or blocks it passes that on through fork and exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    faults = FaultPlan(transient_rate=args.transient_rate, disconnect_rate=args.disconnect_rate)
    # Keeping messages would grow without bound in a long-running sink.
    sink = SmtpSink(
        keep_messages=False, faults=faults, seed=args.seed, host=args.host, port=args.port
    )
    with sink:
        print(f"smtpsink listening on {sink.host}:{sink.port} (Ctrl-C to stop)", flush=True)
        started = time.monotonic()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    elapsed = time.monotonic() - started
    received = sink.received
    print(
        f"\n{sink.total} messages to {len(received)} recipients "
        f"({sum(received.values())} copies) over {sink.connections} connections "
        f"in {elapsed:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
