"""Sign-up on the production topology: the web app's confirmation goes through a real
Celery worker and SMTP; the subscribe limits live in the real Redis; expiry runs as a task."""

from __future__ import annotations

import datetime as dt
import email
import re
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from workers.celery_app import make_celery
from workers.dispatch import CeleryDispatcher

from papermail.db import session_scope
from papermail.models import Subscriber, SubscriberStatus
from papermail.subscribers.signup_limits import Budget, SignupLimits
from papermail.web.app import create_app
from papermail.wiring import Wiring
from papermail_dev.smtpsink import SmtpSink
from tests.integration.conftest import flushed_redis
from tests.support.dispatch import RecordingDispatcher
from tests.support.services import CeleryWorker, wait_until

pytestmark = pytest.mark.integration
REDIS_DB = 13  # the web tests' own Redis database


@pytest.fixture
def redis_url() -> Iterator[str]:  # overrides the shared one: our own database
    yield from flushed_redis(REDIS_DB)


def _csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert match
    return match[1]


def _subscribe(client: TestClient, address: str) -> int:
    response = client.post(
        "/subscribe",
        data={
            "email": address,
            "frequency": "daily",
            "topics": "diffusion",
            "csrf_token": _csrf(client),
        },
    )
    return response.status_code


def test_confirmation_goes_through_a_worker_and_smtp(
    runtime: Wiring, service_env: dict[str, str], sink: SmtpSink, tmp_path: Path
) -> None:
    celery = make_celery(runtime.settings)
    app = create_app(runtime, dispatcher=CeleryDispatcher(celery))
    worker = CeleryWorker(service_env, log_path=tmp_path / "worker.log").start()
    try:
        with TestClient(app, base_url="https://testserver") as client:
            assert _subscribe(client, "ada@example.org") == 200
            assert sink.wait_for(1, timeout=60), "no confirmation reached the SMTP sink"
            [received] = sink.messages
            assert received.rcpt_tos == ("ada@example.org",)
            message = email.message_from_bytes(received.data, policy=policy.default)
            text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            link = re.search(r"https://papers\.example\.org(/confirm/\S+)", text)
            assert link and "diffusion" in text
            assert client.get(link[1]).status_code == 200  # the page with the button
            assert client.post(link[1], follow_redirects=False).status_code == 303
    finally:
        worker.stop()
        celery.close()
    with runtime.sessions() as session:
        ada = session.query(Subscriber).filter_by(email="ada@example.org").one()
        assert ada.status is SubscriberStatus.ACTIVE


def test_subscribe_limits_are_shared_through_redis(runtime: Wiring) -> None:
    sent = RecordingDispatcher()
    limits = SignupLimits(runtime.redis, per_address=Budget(2, 86400), per_ip=Budget(4, 3600))
    # Two app instances, as two web processes would be: one budget between them.
    clients = [
        TestClient(
            create_app(runtime, dispatcher=sent, limits=limits), base_url="https://testserver"
        )
        for _ in range(2)
    ]
    statuses = [_subscribe(clients[n % 2], "ada@example.org") for n in range(4)]
    assert statuses == [200, 200, 200, 200]
    assert len(sent.confirmations) == 2  # the address budget; the page never changed
    assert _subscribe(clients[0], "grace@example.org") == 429  # the IP budget


def test_expiry_runs_as_a_task(
    runtime: Wiring, service_env: dict[str, str], tmp_path: Path
) -> None:
    from papermail.subscribers.confirmations import request_subscription
    from papermail.subscribers.preferences import Preferences

    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    with session_scope(runtime.sessions) as session:
        request_subscription(session, email="old@example.org", prefs=Preferences(), now=long_ago)
        request_subscription(
            session, email="new@example.org", prefs=Preferences(), now=dt.datetime.now(dt.UTC)
        )
    celery = make_celery(runtime.settings)
    worker = CeleryWorker(service_env, log_path=tmp_path / "worker.log").start()
    try:
        celery.send_task("papermail.expire_pending")

        def remaining() -> set[str]:
            with runtime.sessions() as session:
                return {s.email for s in session.query(Subscriber)}

        wait_until(
            lambda: remaining() == {"new@example.org"},
            timeout=60,
            message="the old pending sign-up to expire",
        )
    finally:
        worker.stop()
        celery.close()
