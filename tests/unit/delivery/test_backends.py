"""Delivery backends: SMTP against two servers, the demo outbox, the test double."""

from __future__ import annotations

import email
import json
import re
import smtplib
import socket
from collections import Counter
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from papermail.delivery.base import (
    BackendUnavailable,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from papermail.delivery.memory import MemoryBackend
from papermail.delivery.outbox import MANIFEST, OutboxBackend, safe_name
from papermail.delivery.smtp import RelayUnreachable, SmtpBackend, SmtpConfigurationError
from papermail_dev.smtpsink import FaultPlan, SmtpSink

SENDER = "digest@papers.example.org"
USER, GOOD, BAD = "papermail", "s3cret", "wrong"  # test credentials for aiosmtpd


def make_message(
    recipient: str = "ada@example.org",
    *,
    subject: str = "Today's trending papers",
    body: str = "Three papers for you today.\n",
    html: str | None = None,
    message_id: str | None = None,
) -> OutgoingMessage:
    # An internationalised address can only be written into a header with SMTPUTF8.
    msg = EmailMessage(policy=policy.SMTP if recipient.isascii() else policy.SMTPUTF8)
    msg["From"] = f"papermail <{SENDER}>"
    msg["To"] = recipient
    msg["Subject"] = subject
    local_id = re.sub(r"[^A-Za-z0-9]", ".", recipient)
    msg["Message-ID"] = message_id or f"<{local_id}@papers.example.org>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return OutgoingMessage(
        sender=SENDER, recipient=recipient, data=msg.as_bytes(), message_id=msg["Message-ID"]
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def backend_for(sink: SmtpSink, **kwargs: Any) -> SmtpBackend:
    return SmtpBackend(sink.host, sink.port, timeout=5, **kwargs)


# -- aiosmtpd: an independent SMTP implementation with scriptable replies -------------------


class ScriptedHandler:
    """Accepts mail, except: 'later*' gets 451 at RCPT; after ``limit`` messages a
    session gets '421 too many messages' at MAIL (as Gmail and Postfix limits do)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.delivered: list[tuple[str, list[str], bytes]] = []
        self.sessions: Counter[int] = Counter()

    async def handle_MAIL(
        self, server: AioSMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if address.startswith("unverified"):
            return "553 5.7.1 Sender address rejected: not owned by user"
        if self.limit is not None and self.sessions[id(session)] >= self.limit:
            return "421 4.7.0 Too many messages for this session, closing connection"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: AioSMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if address.startswith("later"):
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: AioSMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.sessions[id(session)] += 1
        self.delivered.append((envelope.mail_from or "", list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Message accepted"


@pytest.fixture
def aiosmtpd_server() -> Iterator[tuple[Controller, ScriptedHandler]]:
    handler = ScriptedHandler(limit=2)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


# -- SmtpBackend ---------------------------------------------------------------------------


def test_smtp_delivers_the_exact_bytes(sink: SmtpSink) -> None:
    message = make_message(
        body="Überblick: .dotted first line follows\n.hidden by naive servers\n.\n..two\n",
        html="<p>Papers for <b>Ada</b> – today</p>",
    )
    connection = backend_for(sink).open()
    connection.send(message)
    connection.close()

    [received] = sink.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ("ada@example.org",)
    assert received.data == message.data
    parsed = email.message_from_bytes(received.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Message-ID"] == message.message_id
    text = parsed.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().splitlines()[1:3] == [".hidden by naive servers", "."]


def test_smtp_reuses_one_connection_for_a_batch(sink: SmtpSink) -> None:
    connection = backend_for(sink).open()
    for i in range(25):
        connection.send(make_message(f"reader{i}@example.org"))
    connection.close()

    assert sink.total == 25
    assert sink.connections == 1
    assert sink.received == Counter({f"reader{i}@example.org": 1 for i in range(25)})


def test_smtp_opens_lazily_and_close_without_sending_is_quiet(sink: SmtpSink) -> None:
    connection = backend_for(sink).open()
    connection.close()
    assert sink.connections == 0


def test_smtp_rejected_recipient_is_permanent_and_the_next_message_still_goes() -> None:
    plan = FaultPlan(reject=lambda rcpt: rcpt.startswith("gone"))
    with SmtpSink(faults=plan) as sink:
        connection = backend_for(sink).open()
        with pytest.raises(PermanentError) as raised:
            connection.send(make_message("gone@example.org"))
        connection.send(make_message("ada@example.org"))
        connection.close()

    assert raised.value.code == 550
    assert sink.received == Counter({"ada@example.org": 1})
    assert sink.connections == 1  # RSET, not a reconnect


def test_smtp_451_is_transient_and_the_session_stays_usable(
    aiosmtpd_server: tuple[Controller, ScriptedHandler],
) -> None:
    controller, handler = aiosmtpd_server
    connection = SmtpBackend(controller.hostname, controller.port, timeout=5).open()
    with pytest.raises(TransientError) as raised:
        connection.send(make_message("later@example.org"))
    message = make_message("ada@example.org")
    connection.send(message)
    connection.close()

    assert type(raised.value) is TransientError
    assert raised.value.code == 451
    assert handler.delivered == [(SENDER, ["ada@example.org"], message.data)]
    assert sum(handler.sessions.values()) == 1


def test_smtp_5xx_to_mail_from_is_a_configuration_error_not_a_bounce(
    aiosmtpd_server: tuple[Controller, ScriptedHandler],
) -> None:
    controller, handler = aiosmtpd_server
    message = make_message()
    misconfigured = OutgoingMessage(
        sender="unverified@papers.example.org",
        recipient=message.recipient,
        data=message.data,
        message_id=message.message_id,
    )
    connection = SmtpBackend(controller.hostname, controller.port, timeout=5).open()
    with pytest.raises(SmtpConfigurationError) as raised:
        connection.send(misconfigured)
    connection.send(message)  # RSET left the session usable
    connection.close()

    assert raised.value.code == 553
    assert not isinstance(raised.value, PermanentError)
    assert [rcpts for _, rcpts, _ in handler.delivered] == [["ada@example.org"]]


def test_smtp_421_at_a_per_session_limit_reconnects_without_failing(
    aiosmtpd_server: tuple[Controller, ScriptedHandler],
) -> None:
    controller, handler = aiosmtpd_server  # 421 after 2 messages per session
    connection = SmtpBackend(controller.hostname, controller.port, timeout=5).open()
    for i in range(5):
        connection.send(make_message(f"reader{i}@example.org"))
    connection.close()

    assert [rcpts for _, rcpts, _ in handler.delivered] == [
        [f"reader{i}@example.org"] for i in range(5)
    ]
    assert sorted(handler.sessions.values()) == [1, 2, 2]
    assert connection.connects == 3


def test_smtp_dropped_connection_is_transient_and_the_next_send_reconnects() -> None:
    with SmtpSink(faults=FaultPlan(disconnect_rate=1.0)) as sink:
        connection = backend_for(sink).open()
        with pytest.raises(TransientError) as raised:
            connection.send(make_message("ada@example.org"))
        sink.faults = None  # the server is healthy again
        connection.send(make_message("grace@example.org"))
        connection.close()

    assert raised.value.code is None
    assert sink.received == Counter({"grace@example.org": 1})
    assert sink.connections == 2


def test_smtp_server_closing_an_idle_session_costs_no_message(sink: SmtpSink) -> None:
    connection = backend_for(sink).open()
    connection.send(make_message("ada@example.org"))
    sink.disconnect_all()  # e.g. the server's idle timeout while we waited on the rate limit
    connection.send(make_message("grace@example.org"))
    connection.close()

    assert sink.received == Counter({"ada@example.org": 1, "grace@example.org": 1})
    assert sink.connections == 2


def test_smtp_4xx_at_end_of_data_is_transient_and_not_delivered() -> None:
    with SmtpSink(faults=FaultPlan(transient_rate=1.0), seed=1) as sink:
        connection = backend_for(sink).open()
        with pytest.raises(TransientError) as raised:
            connection.send(make_message("ada@example.org"))
        connection.close()

    assert raised.value.code in (421, 451)
    assert sink.total == 0


def test_smtp_connection_refused_is_a_relay_outage_not_a_failed_message() -> None:
    # Transient, and BackendUnavailable: the batch stops instead of spending every
    # row's attempts on a relay that is down.
    connection = SmtpBackend("127.0.0.1", free_port(), timeout=2).open()
    with pytest.raises(TransientError) as raised:
        connection.send(make_message())
    assert type(raised.value) is RelayUnreachable
    assert isinstance(raised.value, BackendUnavailable)
    assert raised.value.code is None


def test_smtp_starttls_and_ssl_together_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not both"):
        SmtpBackend("127.0.0.1", 25, starttls=True, ssl=True)


def test_smtp_starttls_not_offered_is_a_configuration_error(sink: SmtpSink) -> None:
    connection = backend_for(sink, starttls=True).open()
    with pytest.raises(SmtpConfigurationError):
        connection.send(make_message())
    assert sink.total == 0


def test_smtp_rejected_credentials_are_a_configuration_error_not_a_bounce() -> None:
    def authenticator(*_: object) -> AuthResult:
        return AuthResult(success=False, handled=False)

    controller = Controller(
        ScriptedHandler(),
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        backend = SmtpBackend(
            controller.hostname, controller.port, username=USER, password=BAD, timeout=5
        )
        connection = backend.open()
        with pytest.raises(SmtpConfigurationError) as raised:
            connection.send(make_message())
        connection.close()
    finally:
        controller.stop()

    assert isinstance(raised.value, TransientError)  # the row retries; nobody bounces
    assert raised.value.code == 535


def test_smtp_accepted_credentials_deliver() -> None:
    def authenticator(
        server: AioSMTP, session: Session, envelope: Envelope, mechanism: str, login: LoginPassword
    ) -> AuthResult:
        return AuthResult(success=(login.login, login.password) == (USER.encode(), GOOD.encode()))

    handler = ScriptedHandler()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        backend = SmtpBackend(controller.hostname, controller.port, username=USER, password=GOOD)
        connection = backend.open()
        connection.send(make_message())
        connection.close()
    finally:
        controller.stop()
    assert [rcpts for _, rcpts, _ in handler.delivered] == [["ada@example.org"]]


def test_smtp_non_ascii_recipient_without_smtputf8_is_permanent(
    aiosmtpd_server: tuple[Controller, ScriptedHandler],
) -> None:
    controller, handler = aiosmtpd_server
    connection = SmtpBackend(controller.hostname, controller.port, timeout=5).open()
    with pytest.raises(PermanentError, match="non-ASCII"):
        connection.send(make_message("josé@example.org"))
    connection.send(make_message("jose@example.org"))
    connection.close()
    assert [rcpts for _, rcpts, _ in handler.delivered] == [["jose@example.org"]]


def test_smtp_non_ascii_recipient_goes_through_with_smtputf8(sink: SmtpSink) -> None:
    connection = backend_for(sink).open()
    connection.send(make_message("josé@example.org"))
    connection.close()
    assert sink.received == Counter({"josé@example.org": 1})


def test_smtp_refuses_crlf_in_envelope_addresses(sink: SmtpSink) -> None:
    message = make_message()
    hostile = OutgoingMessage(
        sender=SENDER,
        recipient="ada@example.org>\r\nRCPT TO:<victim@example.org",
        data=message.data,
        message_id=message.message_id,
    )
    connection = backend_for(sink).open()
    with pytest.raises(PermanentError):
        connection.send(hostile)
    connection.close()
    assert sink.total == 0
    assert sink.connections == 0


def test_smtp_dot_stuffing_matches_smtplib_exactly(
    aiosmtpd_server: tuple[Controller, ScriptedHandler],
) -> None:
    controller, handler = aiosmtpd_server
    odd = OutgoingMessage(
        sender=SENDER,
        recipient="ada@example.org",
        data=b".first\r\n..second\r\n.\r\nno final newline",
        message_id="<odd@papers.example.org>",
    )
    connection = SmtpBackend(controller.hostname, controller.port, timeout=5).open()
    connection.send(odd)
    connection.close()
    with smtplib.SMTP(controller.hostname, controller.port) as client:
        client.sendmail(SENDER, ["ada@example.org"], odd.data)

    ours, theirs = handler.delivered[0][2], handler.delivered[1][2]
    assert ours == theirs == b".first\r\n..second\r\n.\r\nno final newline\r\n"


# -- OutboxBackend ---------------------------------------------------------------------------


def read_manifest(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / MANIFEST).read_text().splitlines()]


def test_outbox_writes_eml_html_manifest_and_index(tmp_path: Path) -> None:
    message = make_message(
        subject="Élan: 3 papers on diffusion",
        html="<!doctype html><html><body><h1>Trending — today</h1></body></html>",
    )
    connection = OutboxBackend(tmp_path / "outbox").open()
    connection.send(message)
    connection.close()

    outbox = tmp_path / "outbox"
    [entry] = read_manifest(outbox)
    assert entry["recipient"] == "ada@example.org"
    assert entry["subject"] == "Élan: 3 papers on diffusion"
    assert entry["message_id"] == message.message_id
    assert (outbox / entry["eml"]).read_bytes() == message.data
    page = (outbox / entry["html"]).read_bytes()
    assert page.startswith(b"\xef\xbb\xbf<!doctype html>")  # BOM: browsers read it as UTF-8
    assert "<h1>Trending — today</h1>" in page.decode("utf-8-sig")
    index = (outbox / "index.html").read_text()
    assert f'href="{entry["html"]}"' in index
    assert f'href="{entry["eml"]}"' in index
    assert "Élan: 3 papers on diffusion" in index
    assert "1 email," in index
    assert not list(outbox.glob("*.tmp")) and not list(outbox.glob(".*"))


def test_outbox_text_only_message_has_no_html_file(tmp_path: Path) -> None:
    connection = OutboxBackend(tmp_path).open()
    connection.send(make_message())
    connection.close()
    [entry] = read_manifest(tmp_path)
    assert entry["html"] is None
    assert {p.name for p in tmp_path.iterdir()} == {entry["eml"], MANIFEST, "index.html"}
    assert "view</a>" not in (tmp_path / "index.html").read_text()


def test_outbox_index_escapes_everything(tmp_path: Path) -> None:
    connection = OutboxBackend(tmp_path).open()
    connection.send(
        make_message(
            "o'brien@example.org",
            subject='<script>alert("x")</script> & more',
            html="<p>hi</p>",
        )
    )
    connection.close()

    index = (tmp_path / "index.html").read_text()
    assert "<script>" not in index
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in index
    assert "o&#x27;brien@example.org" in index


def test_outbox_hostile_message_id_cannot_escape_the_directory(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    connection = OutboxBackend(outbox).open()
    connection.send(
        make_message("../../root@example.org", message_id="<../../etc/passwd@x>", html="<p>x</p>")
    )
    connection.close()

    written = sorted(p.name for p in outbox.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox"]
    [entry] = read_manifest(outbox)
    assert written == sorted([entry["eml"], entry["html"], MANIFEST, "index.html"])
    for name in (entry["eml"], entry["html"]):
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name)
        assert (outbox / name).resolve().parent == outbox.resolve()
    assert entry["eml"].startswith("etc_passwd_x--_root_example.org-")
    assert ".." not in "".join(written)


def test_safe_name_keeps_distinct_ids_distinct() -> None:
    # Both sanitise to the same readable part; the hash keeps them apart.
    assert safe_name("<a/b@x>", "r@x") != safe_name("<a_b@x>", "r@x")
    assert safe_name("<a@x>", "r@x") == safe_name("<a@x>", "r@x")
    assert len(safe_name("<" + "a" * 500 + "@x>", "r@x")) < 140


def test_outbox_index_lists_every_batch_newest_first(tmp_path: Path) -> None:
    backend = OutboxBackend(tmp_path)
    first, second = backend.open(), backend.open()
    first.send(make_message("early@example.org", subject="first"))
    second.send(make_message("late@example.org", subject="second"))
    second.close()
    first.close()

    index = (tmp_path / "index.html").read_text()
    assert "2 emails," in index
    assert index.index("late@example.org") < index.index("early@example.org")
    assert [e["recipient"] for e in read_manifest(tmp_path)] == [
        "early@example.org",
        "late@example.org",
    ]


def test_outbox_write_failure_is_transient(tmp_path: Path) -> None:
    connection = OutboxBackend(tmp_path / "outbox").open()
    (tmp_path / "outbox").rmdir()  # the directory vanished under us
    with pytest.raises(TransientError):
        connection.send(make_message())


# -- MemoryBackend -------------------------------------------------------------------------


def test_memory_backend_records_messages_and_connections() -> None:
    backend = MemoryBackend()
    connection = backend.open()
    connection.send(make_message("ada@example.org"))
    connection.send(make_message("grace@example.org"))
    connection.close()
    connection.close()  # idempotent

    assert backend.recipients == ["ada@example.org", "grace@example.org"]
    assert backend.outbox[0] == make_message("ada@example.org")
    assert (backend.opened, backend.closed) == (1, 1)
    with pytest.raises(RuntimeError):
        connection.send(make_message())


def test_memory_backend_raises_what_fail_returns() -> None:
    def fail(message: OutgoingMessage) -> PermanentError | TransientError | None:
        if message.recipient.startswith("gone"):
            return PermanentError("550 no such user", code=550)
        if message.recipient.startswith("later"):
            return TransientError("451 try later", code=451)
        return None

    backend = MemoryBackend(fail=fail)
    connection = backend.open()
    with pytest.raises(PermanentError) as permanent:
        connection.send(make_message("gone@example.org"))
    with pytest.raises(TransientError) as transient:
        connection.send(make_message("later@example.org"))
    connection.send(make_message("ada@example.org"))

    assert permanent.value.code == 550
    assert transient.value.code == 451
    assert backend.recipients == ["ada@example.org"]


def test_a_dot_safe_message_goes_out_unchanged_and_whole(
    aiosmtpd_server: tuple[Controller, ScriptedHandler],
) -> None:
    controller, handler = aiosmtpd_server
    body = b"".join(b"line %d of a long digest\r\n" % n for n in range(5000))  # > 100 KB
    data = b"Subject: big\r\nMessage-ID: <big@papers.example.org>\r\n\r\n" + body
    message = OutgoingMessage(
        sender=SENDER,
        recipient="ada@example.org",
        data=data,
        message_id="<big@papers.example.org>",
        dot_safe=True,
    )
    connection = SmtpBackend(controller.hostname, controller.port, timeout=5).open()
    connection.send(message)
    connection.send(message)
    connection.close()
    assert [d[2] for d in handler.delivered] == [data, data]


class _TrickleSocket:
    """A socket whose kernel takes at most ``limit`` bytes per call (a full send buffer)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.received = limit, bytearray()

    def sendmsg(self, buffers: list[memoryview]) -> int:
        taken = b"".join(bytes(b) for b in buffers)[: self.limit]
        self.received += taken
        return len(taken)


@pytest.mark.parametrize("limit", [1, 7, 4096, 10**6])
def test_message_and_terminator_survive_partial_writes(limit: int) -> None:
    from papermail.delivery.smtp import _send_parts

    client = smtplib.SMTP()
    client.sock = _TrickleSocket(limit)  # type: ignore[assignment]
    _send_parts(client, (b"x" * 10_000 + b"\r\n", b"", b".\r\n"))
    assert bytes(client.sock.received) == b"x" * 10_000 + b"\r\n.\r\n"  # type: ignore[attr-defined]
