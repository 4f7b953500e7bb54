"""SMTP delivery: one lazily opened connection reused for a whole batch.

Error mapping (what sending.py relies on):

- a 5xx reply to RCPT or DATA                  -> PermanentError(code)
- a 4xx reply, a dropped connection, a timeout -> TransientError(code or None)
- a server that refuses *us* (auth, STARTTLS, a 5xx greeting, EHLO or MAIL FROM)
                                               -> SmtpConfigurationError, a TransientError:
  it is the operator's problem and hits every message alike, so rows wait and retry
  instead of bouncing subscribers.

A failure never poisons the rest of the batch: after a refusal the transaction is
RSET, and a broken connection is dropped so the next send() reconnects.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl as _ssl
from collections.abc import Callable

from papermail.delivery.base import (
    BackendUnavailable,
    DeliveryError,
    OutgoingMessage,
    PermanentError,
    TransientError,
    nothing,
)

__all__ = ["RelayUnreachable", "SmtpBackend", "SmtpConfigurationError", "SmtpConnection"]

# Reply code meaning "service not available, closing the channel" (RFC 5321 3.8).
_CLOSING = 421


class RelayUnreachable(BackendUnavailable):
    """The relay could not be reached at all (refused, timed out, name not found)."""


class SmtpConfigurationError(BackendUnavailable):
    """The server refuses this client (credentials, TLS, greeting): fix config, then retry."""


class _Refused(Exception):
    """A reply other than the one expected, on a connection that is still usable."""

    def __init__(self, stage: str, code: int, reply: bytes) -> None:
        super().__init__(f"{stage} refused: {code} {reply.decode('utf-8', 'replace')}")
        self.stage = stage
        self.code = code

    def as_delivery_error(self) -> DeliveryError:
        if not 500 <= self.code <= 599:
            return TransientError(str(self), code=self.code)
        if self.stage == "MAIL FROM":
            # Refused before the recipient was even named: our sender or our session is
            # the problem, for every message alike. Bouncing subscribers for it would
            # suppress the whole list.
            return SmtpConfigurationError(str(self), code=self.code)
        return PermanentError(str(self), code=self.code)


class SmtpBackend:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        timeout: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        if starttls and ssl:
            raise ValueError("choose STARTTLS or implicit SSL, not both")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.ssl = ssl
        self.timeout = timeout
        self.local_hostname = local_hostname

    def open(self) -> SmtpConnection:
        return SmtpConnection(self)

    def connect(self) -> smtplib.SMTP:
        """A greeted, secured and authenticated client, or a TransientError."""
        try:
            client = self._client()
        except (smtplib.SMTPException, OSError) as exc:
            raise _setup_error(self, exc) from exc
        try:
            self._prepare(client)
        except BaseException as exc:
            _close_quietly(client)
            if isinstance(exc, smtplib.SMTPException | OSError):
                raise _setup_error(self, exc) from exc
            raise
        return client

    def _client(self) -> smtplib.SMTP:
        if self.ssl:
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout,
                context=_ssl.create_default_context(),
            )
        return smtplib.SMTP(
            self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
        )

    def _prepare(self, client: smtplib.SMTP) -> None:
        # The message and its ".\r\n" go out as two writes: with Nagle on, the kernel holds
        # the terminator until the server ACKs the message, which it delays ~40 ms.
        assert client.sock is not None  # connect() in _connect opened it
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.ehlo_or_helo_if_needed()
        if self.starttls:
            client.starttls(context=_ssl.create_default_context())
            client.ehlo()  # capabilities change once the channel is encrypted
        if self.username is not None:
            client.login(self.username, self.password or "")


class SmtpConnection:
    """Sends messages over one SMTP session, reconnecting after the server drops it."""

    def __init__(self, backend: SmtpBackend) -> None:
        self._backend = backend
        self._client: smtplib.SMTP | None = None
        self.connects = 0  # sessions opened so far; tests and logs like to know

    def send(
        self, message: OutgoingMessage, *, before_accept: Callable[[], None] = nothing
    ) -> None:
        _check_envelope(message)
        if self._client is not None:
            try:
                self._transaction(self._client, message, before_accept, reused=True)
                return
            except _StaleConnection:
                # The server closed an idle session, or ended it at its per-connection
                # message limit ("421 too many messages"), before accepting anything for
                # this message: one retry on a fresh session is safe and spares the row
                # a backoff.
                self._discard()
        self._transaction(self._connect(), message, before_accept, reused=False)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
            _close_quietly(client)

    def _connect(self) -> smtplib.SMTP:
        self._client = self._backend.connect()
        self.connects += 1
        return self._client

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)

    def _transaction(
        self,
        client: smtplib.SMTP,
        message: OutgoingMessage,
        before_accept: Callable[[], None],
        *,
        reused: bool,
    ) -> None:
        stage = "MAIL FROM"
        pipelined = False
        try:
            # docmd, not mail()/rcpt(): those re-parse each address (~40 us apiece), and
            # _check_envelope has already refused anything that could break the line.
            options = "".join(" " + o for o in _mail_options(client, message))
            # What smtplib.mail() does for SMTPUTF8: commands may then carry UTF-8.
            client.command_encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
            if client.has_extn("pipelining"):
                # RFC 2920: MAIL, RCPT and DATA in one write, three replies read in
                # order: two round trips a message instead of four.
                client.send(
                    f"MAIL FROM:<{message.sender}>{options}\r\nRCPT TO:<{message.recipient}>"
                    f"\r\nDATA\r\n".encode(client.command_encoding)
                )
                pipelined = True
            _expect(
                stage, _reply(client, "MAIL", f"FROM:<{message.sender}>{options}", pipelined), 250
            )
            stage = "RCPT TO"
            _expect(stage, _reply(client, "RCPT", f"TO:<{message.recipient}>", pipelined), 250, 251)
            stage = "DATA"
            _expect(stage, _reply(client, "DATA", "", pipelined), 354)
            stage = "end of DATA"
            try:
                before_accept()
            except BaseException:
                # In DATA mode with nothing sent yet: drop the session, so the server
                # discards this message (a QUIT now would only be read as its text).
                self._discard()
                raise
            _send_parts(client, _data_payload(message.data, dot_safe=message.dot_safe))
            _expect(stage, client.getreply(), 250)
        except _Refused as refused:
            if reused and refused.stage == "MAIL FROM" and refused.code == _CLOSING:
                if pipelined:
                    self._discard()
                raise _StaleConnection from refused
            if pipelined and not self._drain(client, after=refused.stage):
                self._discard()
            else:
                self._recover(client, refused.code)
            raise refused.as_delivery_error() from None
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # OSError covers resets, refused connections and socket timeouts.
            self._discard()
            if reused and stage == "MAIL FROM":
                raise _StaleConnection from exc
            # Lost after the data went out, the message may or may not have been
            # accepted; retrying risks a duplicate, dropping it risks a loss. Retry.
            raise TransientError(f"connection lost at {stage}: {exc!r}") from exc

    def _drain(self, client: smtplib.SMTP, *, after: str) -> bool:
        """Read the pipelined replies still owed after a refusal at ``after``.

        If the server went into DATA mode anyway, end it with an empty message (it has
        no accepted recipient, so nothing is delivered). False: give the session up.
        """
        unread = {"MAIL FROM": 2, "RCPT TO": 1}.get(after, 0)
        try:
            for _ in range(unread):
                code, _text = client.getreply()
            if unread and code == 354:
                client.send(b".\r\n")
                client.getreply()
        except (smtplib.SMTPException, OSError):
            return False
        return True

    def _recover(self, client: smtplib.SMTP, code: int) -> None:
        """After a refusal, leave the session clean for the next message (or drop it)."""
        if code == _CLOSING:
            self._discard()
            return
        try:
            rset_code, _ = client.rset()
        except (smtplib.SMTPException, OSError):
            rset_code = 0
        if rset_code != 250:
            self._discard()


def _reply(client: smtplib.SMTP, verb: str, argument: str, pipelined: bool) -> tuple[int, bytes]:
    """The reply to a command: already sent in a pipeline, or sent now."""
    if pipelined:
        return client.getreply()
    return client.docmd(verb, argument)


class _StaleConnection(Exception):
    """A reused session died before MAIL FROM was accepted."""


def _expect(stage: str, reply: tuple[int, bytes], *ok: int) -> None:
    code, text = reply
    if code not in ok:
        raise _Refused(stage, code, text)


def _mail_options(client: smtplib.SMTP, message: OutgoingMessage) -> list[str]:
    options = []
    if client.has_extn("8bitmime") and not message.data.isascii():
        options.append("BODY=8BITMIME")
    if not (message.sender.isascii() and message.recipient.isascii()):
        if not client.has_extn("smtputf8"):
            raise PermanentError("the SMTP server cannot deliver to non-ASCII addresses")
        options.append("SMTPUTF8")
    return options


def _check_envelope(message: OutgoingMessage) -> None:
    # smtplib would put these straight into the command line: SMTP command injection.
    for address in (message.sender, message.recipient):
        if any(c in address for c in "\r\n<>"):
            raise PermanentError(f"invalid envelope address {address!r}")


def _data_payload(data: bytes, *, dot_safe: bool = False) -> tuple[bytes, ...]:
    """Dot-stuffed message and terminator, exactly the bytes smtplib.SMTP.data() sends.

    smtplib does this with a regex that costs ~0.25 ms per 60 KB message while holding
    the GIL. Here: nothing at all for a ``dot_safe`` message (papermail's own digests
    never have a line starting with ".": pipeline/encoding.py), else a search and a replace
    only when needed; the terminator stays its own piece rather than being appended to
    (so copying) the whole message.
    """
    if dot_safe:
        stuffed = data
    else:
        stuffed = data.replace(b"\n.", b"\n..") if b"\n." in data else data
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
    ending = b".\r\n" if stuffed.endswith(b"\r\n") else b"\r\n.\r\n"
    return (stuffed, ending)


def _send_parts(client: smtplib.SMTP, parts: tuple[bytes, ...]) -> None:
    """Write ``parts`` back to back, in one system call when the kernel takes them all.

    A sendall per part costs a system call each and, with TCP_NODELAY, a segment each
    that the server wakes up for. TLS sockets have no sendmsg: one write per part there.
    """
    sock = client.sock
    if sock is None:
        raise smtplib.SMTPServerDisconnected("please run connect() first")
    if isinstance(sock, _ssl.SSLSocket):
        for part in parts:
            sock.sendall(part)
        return
    pending = [memoryview(p) for p in parts if p]
    while pending:
        written = sock.sendmsg(pending)
        while pending and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if written:
            pending[0] = pending[0][written:]


def _setup_error(backend: SmtpBackend, exc: BaseException) -> TransientError:
    """Map a failure while connecting, greeting, securing or logging in."""
    where = f"{backend.host}:{backend.port}"
    if isinstance(exc, smtplib.SMTPResponseException):  # greeting, EHLO, STARTTLS, AUTH
        code, text = exc.smtp_code, exc.smtp_error
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        error = SmtpConfigurationError if 500 <= code <= 599 else TransientError
        return error(f"{where} refused this client: {code} {text}", code=code)
    if isinstance(exc, _ssl.SSLCertVerificationError):
        return SmtpConfigurationError(f"{where} presented an untrusted certificate: {exc}")
    # (smtplib.SMTPException is itself an OSError, hence this order.)
    if isinstance(exc, smtplib.SMTPException) and not isinstance(
        exc, smtplib.SMTPServerDisconnected
    ):
        # no STARTTLS or AUTH offered, no auth mechanism in common
        return SmtpConfigurationError(f"cannot set up a session with {where}: {exc}")
    # refused, reset, timed out: the server may well be back in a minute, but until then
    # no message can go, so the batch stops instead of spending every row's attempts.
    return RelayUnreachable(f"cannot reach {where}: {exc!r}")


def _close_quietly(client: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        client.close()
