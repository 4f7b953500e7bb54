"""The SMTP sink's wire protocol: one asyncio ``Protocol`` per client connection.

Commands are parsed a line at a time; DATA is handled by searching a buffer for the
``CRLF.CRLF`` terminator instead of feeding every line through Python, which is what
lets the sink take thousands of ~60 KB messages a second. What happens to an accepted
message, and whether a command misbehaves on purpose, is the sink's business
(``SinkHooks``, implemented by papermail_dev.smtpsink.SmtpSink).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["DROP", "R421", "R451", "FaultPlan", "SinkHooks", "SmtpSession"]


@dataclass
class FaultPlan:
    # Probability that MAIL, RCPT or the final "." of DATA answers 421 or 451.
    # After a 421 the sink closes the connection, as RFC 5321 says a server does.
    transient_rate: float = 0.0
    # Probability that the sink drops the connection at MAIL, RCPT or the final ".".
    disconnect_rate: float = 0.0
    # recipient -> True to answer 550 at RCPT.
    reject: Callable[[str], bool] | None = None


DROP = b""  # sentinel "reply": close the connection without answering
TERMINATOR = b"\r\n.\r\n"
MAX_LINE = 4096  # RFC 5321 allows 512 for commands; be generous, but bounded

OK = b"250 2.0.0 Ok\r\n"
QUEUED = b"250 2.0.0 Ok: queued\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
BYE = b"221 2.0.0 Bye\r\n"
R421 = b"421 4.3.2 Service temporarily unavailable, closing connection\r\n"
R451 = b"451 4.3.0 Temporary local problem, try again later\r\n"
R550 = b"550 5.1.1 Recipient rejected\r\n"
BAD_SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"
BAD_SYNTAX = b"501 5.5.4 Syntax error in parameters\r\n"
UNKNOWN = b"500 5.5.2 Command not recognised\r\n"
TOO_LONG = b"500 5.5.2 Line too long\r\n"


class SinkHooks(Protocol):
    """What a session needs from its sink; every call comes on the sink's loop thread."""

    keep_messages: bool
    faults: FaultPlan | None

    def _opened(self, session: SmtpSession) -> None: ...

    def _closed(self, session: SmtpSession) -> None: ...

    def _accept(self, mail_from: str, rcpt_tos: list[str], data: bytes | None, size: int) -> None:
        """A complete message: ``data`` if the sink keeps messages, ``size`` its bytes."""
        ...

    def _fault(self) -> bytes | None:
        """A reply (or DROP) for this MAIL/RCPT/end-of-DATA to misbehave with, or None."""
        ...


class SmtpSession(asyncio.Protocol):
    """One client connection: a command loop, or a DATA buffer waiting for CRLF.CRLF."""

    def __init__(self, sink: SinkHooks) -> None:
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
            b"NOOP": lambda _: OK,
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
            if reply is DROP:
                self.close(out)
            else:
                out.append(reply)
                if reply is R421 or reply is BYE:
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
            if len(self.buf) > MAX_LINE:
                self.buf.clear()
                return TOO_LONG
            return None
        line = bytes(self.buf[:end]).rstrip(b"\r")
        del self.buf[: end + 1]
        handler = self.handlers.get(line[:4].upper())
        if handler is None or (len(line) > 4 and line[4:5] != b" "):
            return UNKNOWN
        return handler(line[5:].strip())

    def step_data(self) -> bytes | None:
        buf = self.buf
        end = buf.find(TERMINATOR, self.scan_from)
        if end < 0:
            # the terminator may straddle two reads: rescan the last 4 bytes next time
            self.scan_from = max(0, len(buf) - 4)
            return None
        # buf starts with the CRLF that ended the DATA line (see data()), so a first line
        # starting with "." unstuffs like any other and an empty message is found at 0.
        content = self.unstuff(end) if self.sink.keep_messages else None
        del buf[: end + len(TERMINATOR)]
        self.in_data = False
        fault = self.sink._fault()
        if fault is None:
            # end: the message's length as sent (dot-stuffed), its last CRLF included
            self.sink._accept(self.mail_from or "", self.rcpt_tos, content, end)
        self.reset()
        return QUEUED if fault is None else fault

    def unstuff(self, end: int) -> bytes:
        body = bytes(self.buf[: end + 2])  # keep the last line's CRLF
        if b"\r\n.." in body:
            body = body.replace(b"\r\n..", b"\r\n.")
        return body[2:]

    # -- commands ----------------------------------------------------------------------

    def ehlo(self, arg: bytes) -> bytes:
        if not arg:
            return BAD_SYNTAX
        self.greeted = True
        self.reset()
        return b"250-papermail-sink\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"

    def helo(self, arg: bytes) -> bytes:
        if not arg:
            return BAD_SYNTAX
        self.greeted = True
        self.reset()
        return b"250 papermail-sink\r\n"

    def mail(self, arg: bytes) -> bytes:
        if not self.greeted or self.mail_from is not None:
            return BAD_SEQUENCE
        address = _address(arg, b"FROM:")
        if address is None:
            return BAD_SYNTAX
        fault = self.sink._fault()
        if fault is not None:
            return fault
        self.mail_from = address
        return OK

    def rcpt(self, arg: bytes) -> bytes:
        if self.mail_from is None:
            return BAD_SEQUENCE
        address = _address(arg, b"TO:")
        if not address:
            return BAD_SYNTAX
        fault = self.sink._fault()
        if fault is not None:
            return fault
        plan = self.sink.faults
        if plan is not None and plan.reject is not None and plan.reject(address):
            return R550
        self.rcpt_tos.append(address)
        return OK

    def data(self, arg: bytes) -> bytes:
        if not self.rcpt_tos:
            return BAD_SEQUENCE
        self.in_data = True
        self.scan_from = 0
        # Pretend the CRLF ending the DATA line is part of the buffer: the terminator
        # search then also finds an empty message (".\r\n" straight after DATA).
        self.buf[:0] = b"\r\n"
        return GO_AHEAD

    def rset(self, arg: bytes) -> bytes:
        self.reset()
        return OK

    def quit(self, arg: bytes) -> bytes:
        return BYE

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
