"""The loopback SMTP sink: protocol, counting, fault injection, CLI."""

from __future__ import annotations

import email
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage

import pytest

from papermail_dev.smtpsink import FaultPlan, ReceivedMessage, SmtpSink

SENDER = "digest@papers.example.org"


def build(recipient: str, body: str = "Three papers for you today.\n") -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = recipient
    msg["Subject"] = "Trending papers"
    msg["Message-ID"] = f"<{recipient.replace('@', '.')}@papers.example.org>"
    msg.set_content(body)
    return msg.as_bytes()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def converse(sink: SmtpSink, payload: bytes, *, pieces: int = 1) -> bytes:
    """Send raw bytes (split into ``pieces`` writes) and return everything the sink says."""
    with socket.create_connection((sink.host, sink.port), timeout=5) as conn:
        conn.recv(1024)  # greeting
        step = max(1, len(payload) // pieces)
        for start in range(0, len(payload), step):
            conn.sendall(payload[start : start + step])
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_counts_each_recipient_copy_and_keeps_the_message(sink: SmtpSink) -> None:
    data = build("ada@example.org")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(SENDER, ["ada@example.org", "grace@example.org"], data)
        client.sendmail(SENDER, ["ada@example.org"], data)

    assert sink.wait_for(2, timeout=5)
    assert sink.total == 2
    assert sink.received == Counter({"ada@example.org": 2, "grace@example.org": 1})
    assert sink.connections == 1
    first = sink.messages[0]
    assert first == ReceivedMessage(SENDER, ("ada@example.org", "grace@example.org"), data)
    assert email.message_from_bytes(first.data)["Subject"] == "Trending papers"


def test_dot_stuffed_lines_come_back_exactly(sink: SmtpSink) -> None:
    body = ".starts with a dot\n..two dots\n.\nlast line\n"
    data = build("ada@example.org", body)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(SENDER, ["ada@example.org"], data)

    assert sink.wait_for(1, timeout=5)
    received = sink.messages[0].data
    assert received == data
    content = email.message_from_bytes(received, policy=policy.default).get_content()
    assert content.splitlines() == [".starts with a dot", "..two dots", ".", "last line"]


def test_pipelined_commands_and_a_terminator_split_across_writes(sink: SmtpSink) -> None:
    payload = (
        b"EHLO client.example\r\n"
        b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        b"..first line was stuffed\r\nbody\r\n.\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n.\r\n"  # empty message
        b"QUIT\r\n"
    )
    replies = converse(sink, payload, pieces=len(payload))  # one byte per write

    codes = [line[:3] for line in replies.split(b"\r\n") if line and line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250", b"221"]
    assert [m.data for m in sink.messages] == [b".first line was stuffed\r\nbody\r\n", b""]
    assert sink.messages[1].mail_from == ""
    assert sink.received == Counter({"b@example.org": 1, "c@example.org": 1})
    # Bytes as they came over the wire: the stuffed dot counts, the terminator does not.
    assert sink.bytes_accepted == len(b"..first line was stuffed\r\nbody\r\n")


def test_ehlo_advertises_8bitmime_and_pipelining(sink: SmtpSink) -> None:
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert client.has_extn("8bitmime")
        assert client.has_extn("pipelining")


def test_out_of_order_and_unknown_commands_are_refused(sink: SmtpSink) -> None:
    replies = converse(
        sink,
        b"MAIL FROM:<a@example.org>\r\nHELO x\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        b"VRFY root\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n",
    )
    codes = [line[:3] for line in replies.split(b"\r\n") if line]
    assert codes == [b"503", b"250", b"503", b"503", b"500", b"250", b"503", b"221"]
    assert sink.total == 0


def test_rejected_recipient_gets_550_and_others_still_count() -> None:
    plan = FaultPlan(reject=lambda rcpt: rcpt.startswith("gone"))
    with SmtpSink(faults=plan) as sink, smtplib.SMTP(sink.host, sink.port) as client:
        refused = client.sendmail(
            SENDER, ["gone@example.org", "ada@example.org"], build("ada@example.org")
        )
        assert refused == {"gone@example.org": (550, b"5.1.1 Recipient rejected")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(SENDER, ["gone@example.org"], build("gone@example.org"))

    assert sink.received == Counter({"ada@example.org": 1})


def test_fault_on_final_dot_means_the_message_was_not_accepted(sink: SmtpSink) -> None:
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt("ada@example.org")[0] == 250
        # Only the end of DATA is still to come, so this is where the fault lands.
        sink.faults = FaultPlan(transient_rate=1.0)
        code, _ = client.data(build("ada@example.org"))
        assert code in (421, 451)

    assert sink.total == 0
    assert sink.received == Counter()
    assert sink.messages == []


def test_disconnect_at_a_command_drops_the_connection() -> None:
    with SmtpSink(faults=FaultPlan(disconnect_rate=1.0)) as sink:
        client = smtplib.SMTP(sink.host, sink.port)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail(SENDER, ["ada@example.org"], build("ada@example.org"))
        assert sink.total == 0


def _send_until_accepted(sink: SmtpSink, recipients: list[str]) -> int:
    """A client that retries each message, reconnecting as needed; returns failures seen."""
    failures = 0
    client: smtplib.SMTP | None = None
    for rcpt in recipients:
        for _attempt in range(100):
            try:
                if client is None:
                    client = smtplib.SMTP(sink.host, sink.port, timeout=5)
                client.sendmail(SENDER, [rcpt], build(rcpt))
                break
            except (smtplib.SMTPException, OSError):
                failures += 1
                if client is not None:
                    client.close()
                client = None
        else:
            raise AssertionError(f"{rcpt} never accepted")
    if client is not None:
        client.quit()
    return failures


def test_transient_faults_with_a_retrying_client_count_everyone_exactly_once() -> None:
    recipients = [f"reader{i}@example.org" for i in range(150)]
    plan = FaultPlan(transient_rate=0.2, disconnect_rate=0.02)
    with SmtpSink(faults=plan, seed=7) as sink:
        failures = _send_until_accepted(sink, recipients)
        assert sink.wait_for(len(recipients), timeout=10)

    # ~1 - 0.78**3 of first attempts fail: the plan really was in force...
    assert failures > 40
    assert sink.connections > 1
    # ...and still nobody is missing and nobody got two copies.
    assert sink.received == Counter({rcpt: 1 for rcpt in recipients})
    assert sink.total == len(recipients)


def test_concurrent_clients_are_all_counted(sink: SmtpSink) -> None:
    def client(n: int) -> None:
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            for i in range(100):
                smtp.sendmail(SENDER, [f"t{n}-{i}@example.org"], build(f"t{n}-{i}@example.org"))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sink.wait_for(400, timeout=10)
    assert sink.total == 400
    assert len(sink.received) == 400
    assert sink.connections == 4


def test_wait_for_times_out_with_false(sink: SmtpSink) -> None:
    assert sink.wait_for(1, timeout=0.05) is False


def test_keep_messages_false_counts_without_storing() -> None:
    with SmtpSink(keep_messages=False) as sink, smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(SENDER, ["ada@example.org"], build("ada@example.org"))
        assert sink.wait_for(1, timeout=5)
        assert sink.messages == []
        assert sink.received == Counter({"ada@example.org": 1})
        assert sink.bytes_accepted == len(build("ada@example.org"))  # what the bench averages


def test_disconnect_all_drops_open_sessions(sink: SmtpSink) -> None:
    client = smtplib.SMTP(sink.host, sink.port)
    assert client.noop()[0] == 250
    sink.disconnect_all()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


def test_stop_releases_the_port_and_start_twice_fails() -> None:
    sink = SmtpSink().start()
    with pytest.raises(RuntimeError):
        sink.start()
    host, port = sink.host, sink.port
    assert host == "127.0.0.1"
    assert port > 0
    sink.stop()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1)


def test_command_line_runs_in_foreground_and_prints_totals_on_ctrl_c() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "papermail_dev.smtpsink", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail(SENDER, ["ada@example.org"], build("ada@example.org"))
            client.sendmail(SENDER, ["ada@example.org"], build("ada@example.org"))
        proc.send_signal(signal.SIGINT)
        # A safety net, not a speed check (the sink exits at once; see smtpsink.main).
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "2 messages to 1 recipients (2 copies) over 1 connections" in out
