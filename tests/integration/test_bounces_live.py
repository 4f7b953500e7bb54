"""Late bounces and complaints on the production topology: digests go out through a real
Celery worker to the SMTP sink with VERP envelope senders; a DSN for one of them comes back
through the real `papermail bounces serve` on 127.0.0.1 and suppresses its reader; a
complaint through the Postmark webhook unsubscribes another."""

from __future__ import annotations

import base64
import email
import os
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from workers.celery_app import beat_schedule, make_celery

from papermail.clock import utcnow
from papermail.config import Settings
from papermail.db import session_scope
from papermail.models import (
    BounceEvent,
    BounceKind,
    BounceSource,
    Delivery,
    JobRun,
    Subscriber,
    SubscriberStatus,
)
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.web.app import create_app
from papermail.wiring import Wiring
from papermail_dev.smtpsink import ReceivedMessage, SmtpSink
from tests.conftest import FIXTURES
from tests.support.services import ROOT, CeleryWorker, free_port, wait_until

pytestmark = pytest.mark.integration

BOUNCE_DOMAIN = "bounces.papers.example.org"
POSTMARK = ("postmark", "integration-webhook-password-0123")
READERS = ("ada@example.org", "grace@example.org")


@pytest.fixture
def bounce_env(service_env: dict[str, str]) -> dict[str, str]:
    return service_env | {
        "PAPERMAIL_BOUNCE_DOMAIN": BOUNCE_DOMAIN,  # turns VERP on
        "PAPERMAIL_BOUNCE_LISTEN_HOST": "127.0.0.1",
        "PAPERMAIL_BOUNCE_LISTEN_PORT": str(free_port()),
        "PAPERMAIL_POSTMARK_WEBHOOK_USERNAME": POSTMARK[0],
        "PAPERMAIL_POSTMARK_WEBHOOK_PASSWORD": POSTMARK[1],
    }


@pytest.fixture
def rt(bounce_env: dict[str, str]) -> Wiring:
    fields = {key.removeprefix("PAPERMAIL_").lower(): value for key, value in bounce_env.items()}
    return Wiring(Settings(_env_file=None, **fields))


@pytest.fixture
def receiver(bounce_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`papermail bounces serve` as operators run it, until the test ends."""
    host, port = (
        bounce_env["PAPERMAIL_BOUNCE_LISTEN_HOST"],
        int(bounce_env["PAPERMAIL_BOUNCE_LISTEN_PORT"]),
    )
    log = open(tmp_path / "bounces.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "papermail", "-v", "bounces", "serve"],
        cwd=ROOT,
        env={**os.environ, **bounce_env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: _listening(host, port), timeout=30, message="the bounce receiver")
        yield host, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=20) == 0, (tmp_path / "bounces.log").read_text()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            log.close()


def _listening(host: str, port: int) -> bool:
    try:
        with smtplib.SMTP(host, port, timeout=2) as client:
            return client.noop()[0] == 250
    except OSError:
        return False


def _finished(rt: Wiring, stage: str) -> int:
    with rt.sessions() as session:
        return len(
            session.scalars(
                select(JobRun.id).where(JobRun.stage == stage, JobRun.finished_at.is_not(None))
            ).all()
        )


def _run_scheduled(rt: Wiring, task: str, stage: str) -> None:
    entry = next(e for e in beat_schedule(rt.settings).values() if e["task"] == task)
    before = _finished(rt, stage)
    app = make_celery(rt.settings)
    app.send_task(task, kwargs=entry.get("kwargs") or {})
    app.close()
    wait_until(lambda: _finished(rt, stage) > before, timeout=60, message=f"{task} to run")


def _send_digests(rt: Wiring, env: dict[str, str], sink: SmtpSink, tmp_path: Path) -> None:
    with session_scope(rt.sessions) as session:
        for address in READERS:
            prefs = Preferences(send_hour=0)  # due today, whatever the clock says
            add_subscriber(session, email=address, prefs=prefs, now=utcnow(), confirmed=True)
    worker = CeleryWorker(env, log_path=tmp_path / "worker.log").start()
    try:
        _run_scheduled(rt, "papermail.ingest_papers", "ingest")
        _run_scheduled(rt, "papermail.build_edition", "edition")
        _run_scheduled(rt, "papermail.plan_deliveries", "planning")
        wait_until(lambda: sink.total >= len(READERS), timeout=60, message="the digests")
    finally:
        worker.stop()


def _dsn_for(message: ReceivedMessage) -> bytes:
    """Postfix's DSN for ``message``: to its envelope sender, quoting its Message-ID."""
    original = email.message_from_bytes(message.data, policy=policy.default)
    token = message.mail_from.split("+", 1)[1].split("@", 1)[0]
    raw = (FIXTURES / "bounces" / "postfix_hard.mail").read_bytes()
    raw = raw.replace(b"bounces+VERP@", f"bounces+{token}@".encode())
    raw = raw.replace(b"<papermail.e1.d1@papers.example.org>", str(original["Message-ID"]).encode())
    return raw.replace(b"\n", b"\r\n")


def _subscriber(rt: Wiring, address: str) -> Subscriber:
    with rt.sessions() as session:
        return session.scalars(select(Subscriber).where(Subscriber.email == address)).one()


def test_a_late_dsn_suppresses_and_a_postmark_complaint_unsubscribes(
    rt: Wiring,
    bounce_env: dict[str, str],
    sink: SmtpSink,
    receiver: tuple[str, int],
    tmp_path: Path,
) -> None:
    _send_digests(rt, bounce_env, sink, tmp_path)
    sent = {m.rcpt_tos[0]: m for m in sink.messages}
    assert set(sent) == set(READERS)
    with rt.sessions() as session:
        deliveries = {d.subscriber_id: d.id for d in session.scalars(select(Delivery))}
    for address, message in sent.items():
        # Each digest's envelope sender is its own, signed, at the bounce domain.
        claims = rt.verp.read_address(message.mail_from)
        assert claims.delivery_id == deliveries[_subscriber(rt, address).id]
        assert message.mail_from.endswith(f"@{BOUNCE_DOMAIN}")

    # Ada's mailbox is gone: her server's DSN comes back to her digest's VERP address.
    ada = sent["ada@example.org"]
    host, port = receiver
    with smtplib.SMTP(host, port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # nothing else is taken
            client.sendmail("", ["postmaster@" + BOUNCE_DOMAIN], b"Subject: hi\r\n\r\nhi\r\n")
        assert client.sendmail("", [ada.mail_from], _dsn_for(ada)) == {}

    wait_until(
        lambda: _subscriber(rt, "ada@example.org").status is SubscriberStatus.SUPPRESSED,
        timeout=30,
        message="ada to be suppressed",
    )
    with rt.sessions() as session:
        [event] = session.scalars(select(BounceEvent)).all()
    assert (event.kind, event.source, event.status) == (BounceKind.HARD, BounceSource.SMTP, "5.1.1")
    assert event.delivery_id == deliveries[_subscriber(rt, "ada@example.org").id]

    # Grace marks her digest as spam; Postmark tells us.
    client = TestClient(create_app(rt), base_url="https://papers.example.org")
    token = base64.b64encode(":".join(POSTMARK).encode()).decode()
    complaint = {
        "RecordType": "SpamComplaint",
        "Type": "SpamComplaint",
        "ID": 9001,
        "Email": "grace@example.org",
        "BouncedAt": utcnow().isoformat(),
    }
    with client:
        first = client.post(
            "/webhooks/postmark", json=complaint, headers={"Authorization": f"Basic {token}"}
        )
        replay = client.post(
            "/webhooks/postmark", json=complaint, headers={"Authorization": f"Basic {token}"}
        )
    assert first.json()["stored"] == 1 and replay.json()["duplicates"] == 1
    grace = _subscriber(rt, "grace@example.org")
    assert grace.status is SubscriberStatus.SUPPRESSED and grace.unsubscribed_at is not None
    rt.engine.dispose()
