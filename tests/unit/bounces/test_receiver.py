"""`papermail bounces serve`'s server on 127.0.0.1: a DSN to a VERP address goes to the
processor; a foreign or forged recipient, or an oversized message, is refused in SMTP."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from papermail.bounces.processor import Intake, Outcome, process_message
from papermail.bounces.receiver import BounceController, make_server
from papermail.bounces.verp import Verp
from papermail.db import session_scope
from papermail.models import BounceEvent, BounceSource, Delivery, Subscriber, SubscriberStatus
from tests.unit.bounces.conftest import BOUNCE_DOMAIN, NOW, fixture

MAX_BYTES = 256 * 1024


def crlf(raw: bytes) -> bytes:
    """As it travels in SMTP (the fixtures are stored with LF line ends)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Process = Callable[[bytes, str], Outcome]


@pytest.fixture
def serve(verp: Verp) -> Iterator[Callable[..., BounceController]]:
    started: list[BounceController] = []

    def start(process: Process, *, lmtp: bool = False) -> BounceController:
        server = make_server(
            verp=verp,
            process=process,
            host="127.0.0.1",
            port=free_port(),
            max_bytes=MAX_BYTES,
            lmtp=lmtp,
            timeout=10,
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _processor(sessions: sessionmaker[Session], intake: Intake) -> Process:
    lock = threading.Lock()  # SQLite: one writer

    def process(raw: bytes, rcpt: str) -> Outcome:
        with lock, session_scope(sessions) as session:
            return process_message(
                session,
                raw,
                intake=intake,
                source=BounceSource.SMTP,
                now=NOW,
                envelope_recipient=rcpt,
            )

    return process


def test_a_dsn_to_its_verp_address_is_taken_and_suppresses(
    serve: Callable[..., BounceController],
    session_factory: sessionmaker[Session],
    intake: Intake,
    verp: Verp,
    ada: Delivery,
) -> None:
    server = serve(_processor(session_factory, intake))
    token = verp.token(delivery_id=ada.id)

    with smtplib.SMTP(server.hostname, server.port, timeout=10) as client:
        refused = client.sendmail(
            "",
            [f"bounces+{token}@{BOUNCE_DOMAIN}"],
            crlf(fixture("postfix_hard.mail", token=token)),
        )

    assert refused == {}
    with session_factory() as session:
        [event] = session.scalars(select(BounceEvent)).all()
        assert (event.source, event.delivery_id) == (BounceSource.SMTP, ada.id)
        subscriber = session.get(Subscriber, ada.subscriber_id)
        assert subscriber is not None and subscriber.status is SubscriberStatus.SUPPRESSED


@pytest.mark.parametrize(
    "rcpt",
    [
        "postmaster@example.org",
        f"someone@{BOUNCE_DOMAIN}",
        f"bounces+d1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}",  # forged
        "bounces+d1-{mac}@elsewhere.example",  # ours, but for another domain
    ],
)
def test_foreign_or_forged_recipients_are_refused_at_rcpt(
    serve: Callable[..., BounceController], verp: Verp, rcpt: str
) -> None:
    calls: list[str] = []
    server = serve(lambda raw, to: calls.append(to) or Outcome())  # type: ignore[func-returns-value]
    mac = verp.token(delivery_id=1).split("-")[1]

    with (
        smtplib.SMTP(server.hostname, server.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.sendmail("", [rcpt.format(mac=mac)], b"Subject: x\r\n\r\nx\r\n")

    [(code, _text)] = refused.value.recipients.values()
    assert code == 550 and calls == []


def test_an_oversized_message_is_refused(
    serve: Callable[..., BounceController], verp: Verp
) -> None:
    calls: list[str] = []
    server = serve(lambda raw, to: calls.append(to) or Outcome())  # type: ignore[func-returns-value]
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (MAX_BYTES // 1000 + 10)

    with smtplib.SMTP(server.hostname, server.port, timeout=10) as client:
        # Declared (SIZE=): refused at MAIL FROM.
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            client.sendmail("", [verp.address(delivery_id=1)], big)
        client.rset()
        # Undeclared: refused once DATA passes the cap.
        client.mail("")
        client.rcpt(verp.address(delivery_id=1))
        undeclared, _reply = client.data(big)

    assert declared.value.smtp_code == undeclared == 552
    assert calls == []


def test_a_failing_processor_asks_the_sender_to_retry(
    serve: Callable[..., BounceController], verp: Verp
) -> None:
    def broken(raw: bytes, rcpt: str) -> Outcome:
        raise ConnectionError("the database went away")

    server = serve(broken)

    with (
        smtplib.SMTP(server.hostname, server.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        client.sendmail("", [verp.address(delivery_id=1)], crlf(fixture("postfix_hard.mail")))

    assert refused.value.smtp_code == 451


def test_lmtp_takes_one_recipient_a_transaction(
    serve: Callable[..., BounceController], verp: Verp
) -> None:
    taken: list[tuple[bytes, str]] = []
    server = serve(lambda raw, to: taken.append((raw, to)) or Outcome(stored=1), lmtp=True)  # type: ignore[func-returns-value]
    first, second = verp.address(delivery_id=1), verp.address(delivery_id=2)

    with smtplib.LMTP(server.hostname, server.port, timeout=10) as client:
        refused = client.sendmail("", [first, second], crlf(fixture("postfix_hard.mail")))

    assert set(refused) == {second}  # 452: "another transaction"
    assert [to for _raw, to in taken] == [first]
    assert b"message/delivery-status" in taken[0][0]
