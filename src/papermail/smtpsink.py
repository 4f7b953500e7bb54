"""A fast loopback SMTP sink for tests, benchmarks and operators.

``SmtpSink`` accepts mail and counts it; nothing is relayed. It is a hand-written
asyncio protocol rather than aiosmtpd because benchmarks push thousands of
~60 KB messages a second through it: DATA is handled by searching a buffer for
the ``CRLF.CRLF`` terminator instead of feeding every line through Python.

A ``FaultPlan`` makes it misbehave on purpose (4xx replies, dropped connections,
550 for chosen recipients) so retry logic can be tested end to end.

    python -m papermail.smtpsink --port 2525     # foreground; Ctrl-C prints totals
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

__all__ = ["FaultPlan", "ReceivedMessage", "SmtpSink", "main"]


@dataclass
class FaultPlan:
    # Probability that MAIL, RCPT or the final "." of DATA answers 421 or 451.
    # After a 421 the sink closes the connection, as RFC 5321 says a server does.
    transient_rate: float = 0.0
    # Probability that the sink drops the connection at MAIL, RCPT or the final ".".
    disconnect_rate: float = 0.0
    # recipient -> True to answer 550 at RCPT.
    reject: Callable[[str], bool] | None = None


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as the client meant it: CRLF line endings, dot-stuffing removed


_DROP = b""  # sentinel "reply": close the connection without answering
_TERMINATOR = b"\r\n.\r\n"
_MAX_LINE = 4096  # RFC 5321 allows 512 for commands; be generous, but bounded

_OK = b"250 2.0.0 Ok\r\n"
_QUEUED = b"250 2.0.0 Ok: queued\r\n"
_GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
_BYE = b"221 2.0.0 Bye\r\n"
_R421 = b"421 4.3.2 Service temporarily unavailable, closing connection\r\n"
_R451 = b"451 4.3.0 Temporary local problem, try again later\r\n"
_R550 = b"550 5.1.1 Recipient rejected\r\n"
_BAD_SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"
_BAD_SYNTAX = b"501 5.5.4 Syntax error in parameters\r\n"
_UNKNOWN = b"500 5.5.2 Command not recognised\r\n"
_TOO_LONG = b"500 5.5.2 Line too long\r\n"


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
        self._connections = 0
        self._sessions: set[_Session] = set()
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
                loop.create_server(lambda: _Session(self), self.host, self.port)
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
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` messages were accepted; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._total >= count, timeout=timeout)

    # -- called on the loop thread by sessions -----------------------------------

    def _opened(self, session: _Session) -> None:
        self._sessions.add(session)
        with self._lock:
            self._connections += 1

    def _closed(self, session: _Session) -> None:
        self._sessions.discard(session)

    def _accept(self, mail_from: str, rcpt_tos: list[str], data: bytes | None) -> None:
        with self._changed:
            self._total += 1
            self._received.update(rcpt_tos)
            if data is not None:
                self._messages.append(ReceivedMessage(mail_from, tuple(rcpt_tos), data))
            self._changed.notify_all()

    def _fault(self) -> bytes | None:
        """Decide whether this MAIL/RCPT/end-of-DATA misbehaves: a reply, _DROP or None."""
        plan = self.faults
        if plan is None:
            return None
        if plan.disconnect_rate and self._rng.random() < plan.disconnect_rate:
            return _DROP
        if plan.transient_rate and self._rng.random() < plan.transient_rate:
            return self._rng.choice((_R421, _R451))
        return None


class _Session(asyncio.Protocol):
    """One client connection: a command loop, or a DATA buffer waiting for CRLF.CRLF."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.in_data = False
        self.scan_from = 0  # where the next terminator search starts in DATA mode
        self.greeted = False
        self.mail_from: str | None = None
        self.rcpt_tos: list[str] = []
        self.closing = False
        self.handlers: dict[bytes, Callable[[bytes], bytes]] = {
            b"EHLO": self.ehlo,
            b"HELO": self.helo,
            b"MAIL": self.mail,
            b"RCPT": self.rcpt,
            b"DATA": self.data,
            b"RSET": self.rset,
            b"NOOP": lambda _: _OK,
            b"QUIT": self.quit,
        }

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sink._opened(self)
        transport.write(b"220 papermail-sink ESMTP ready\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink._closed(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        # Replies to pipelined commands go out in one write, not one syscall each.
        out: list[bytes] = []
        while not self.closing:
            reply = self.step_data() if self.in_data else self.step_command()
            if reply is None:
                break  # need more bytes
            if reply is _DROP:
                self.close(out)
            else:
                out.append(reply)
                if reply is _R421 or reply is _BYE:
                    self.close(out)
        if out and not self.closing:
            assert self.transport is not None
            self.transport.write(b"".join(out))

    def close(self, out: list[bytes]) -> None:
        # Replies already earned by earlier pipelined commands still go out: a message
        # counted as accepted must have its 250 delivered, or a retrying client would
        # send it again and the sink would count it twice.
        assert self.transport is not None
        self.closing = True
        self.buf.clear()
        if out:
            self.transport.write(b"".join(out))
        self.transport.close()

    # -- the two modes -----------------------------------------------------------------

    def step_command(self) -> bytes | None:
        end = self.buf.find(b"\n")
        if end < 0:
            if len(self.buf) > _MAX_LINE:
                self.buf.clear()
                return _TOO_LONG
            return None
        line = bytes(self.buf[:end]).rstrip(b"\r")
        del self.buf[: end + 1]
        handler = self.handlers.get(line[:4].upper())
        if handler is None or (len(line) > 4 and line[4:5] != b" "):
            return _UNKNOWN
        return handler(line[5:].strip())

    def step_data(self) -> bytes | None:
        buf = self.buf
        end = buf.find(_TERMINATOR, self.scan_from)
        if end < 0:
            # the terminator may straddle two reads: rescan the last 4 bytes next time
            self.scan_from = max(0, len(buf) - 4)
            return None
        # buf starts with the CRLF that ended the DATA line (see data()), so a first line
        # starting with "." unstuffs like any other and an empty message is found at 0.
        content = self.unstuff(end) if self.sink.keep_messages else None
        del buf[: end + len(_TERMINATOR)]
        self.in_data = False
        fault = self.sink._fault()
        if fault is None:
            self.sink._accept(self.mail_from or "", self.rcpt_tos, content)
        self.reset()
        return _QUEUED if fault is None else fault

    def unstuff(self, end: int) -> bytes:
        body = bytes(self.buf[: end + 2])  # keep the last line's CRLF
        if b"\r\n.." in body:
            body = body.replace(b"\r\n..", b"\r\n.")
        return body[2:]

    # -- commands ----------------------------------------------------------------------

    def ehlo(self, arg: bytes) -> bytes:
        if not arg:
            return _BAD_SYNTAX
        self.greeted = True
        self.reset()
        return b"250-papermail-sink\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"

    def helo(self, arg: bytes) -> bytes:
        if not arg:
            return _BAD_SYNTAX
        self.greeted = True
        self.reset()
        return b"250 papermail-sink\r\n"

    def mail(self, arg: bytes) -> bytes:
        if not self.greeted or self.mail_from is not None:
            return _BAD_SEQUENCE
        address = _address(arg, b"FROM:")
        if address is None:
            return _BAD_SYNTAX
        fault = self.sink._fault()
        if fault is not None:
            return fault
        self.mail_from = address
        return _OK

    def rcpt(self, arg: bytes) -> bytes:
        if self.mail_from is None:
            return _BAD_SEQUENCE
        address = _address(arg, b"TO:")
        if not address:
            return _BAD_SYNTAX
        fault = self.sink._fault()
        if fault is not None:
            return fault
        plan = self.sink.faults
        if plan is not None and plan.reject is not None and plan.reject(address):
            return _R550
        self.rcpt_tos.append(address)
        return _OK

    def data(self, arg: bytes) -> bytes:
        if not self.rcpt_tos:
            return _BAD_SEQUENCE
        self.in_data = True
        self.scan_from = 0
        # Pretend the CRLF ending the DATA line is part of the buffer: the terminator
        # search then also finds an empty message (".\r\n" straight after DATA).
        self.buf[:0] = b"\r\n"
        return _GO_AHEAD

    def rset(self, arg: bytes) -> bytes:
        self.reset()
        return _OK

    def quit(self, arg: bytes) -> bytes:
        return _BYE

    def reset(self) -> None:
        self.mail_from = None
        self.rcpt_tos = []


def _address(arg: bytes, keyword: bytes) -> str | None:
    """The path in ``FROM:<a@b> PARAMS`` / ``TO:<a@b>``; None when malformed."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].strip()
    if rest.startswith(b"<"):
        close = rest.find(b">")
        if close < 0:
            return None
        path = rest[1:close]
    else:
        path = rest.split(b" ", 1)[0]
    return path.decode("utf-8", "replace")  # SMTPUTF8 is advertised


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m papermail.smtpsink", description="Accept and count SMTP mail."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--transient-rate", type=float, default=0.0)
    parser.add_argument("--disconnect-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
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
