"""The daily digest end to end on the production topology: PostgreSQL, Redis, a real Celery
worker, the HF API over HTTP (a local stand-in) and SMTP to a server on 127.0.0.1."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select
from workers.celery_app import beat_schedule, make_celery

from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.models import Delivery, DeliveryStatus, Edition, JobRun, MailFormat
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.wiring import Wiring
from papermail_dev.smtpsink import SmtpSink
from tests.support.services import CeleryWorker, wait_until

pytestmark = pytest.mark.integration

READERS = {
    "ada@example.org": Preferences(topics=["diffusion", "video"], max_papers=5),
    "grace@example.org": Preferences(format=MailFormat.TEXT, max_papers=3),
    "alan@example.org": Preferences(
        topics=["reinforcement learning"], max_papers=4, timezone="America/New_York", send_hour=0
    ),
}


def _subscribe_all(rt: Wiring) -> None:
    with session_scope(rt.sessions) as session:
        for address, prefs in READERS.items():
            # 0:00 UTC: everyone's send hour has come on the edition's day, whatever the
            # clock says (0:00 in New York is 5:00 UTC: not yet due from 0:00 to 5:00 UTC).
            prefs = prefs.model_copy(update={"send_hour": 0, "timezone": "UTC"})
            add_subscriber(session, email=address, prefs=prefs, now=utcnow(), confirmed=True)


def _finished_runs(rt: Wiring, stage: str) -> int:
    with rt.sessions() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(JobRun)
                .where(JobRun.stage == stage, JobRun.finished_at.is_not(None))
            )
            or 0
        )


def _run_scheduled(rt: Wiring, env: dict[str, str], task: str, stage: str) -> None:
    """Publish a task exactly as beat's schedule names it; wait for its journal entry."""
    entry = next(e for e in beat_schedule(rt.settings).values() if e["task"] == task)
    before = _finished_runs(rt, stage)
    app = make_celery(rt.settings)
    app.send_task(task, kwargs=entry.get("kwargs") or {})
    app.close()
    wait_until(lambda: _finished_runs(rt, stage) > before, timeout=60, message=f"{task} to run")


def test_beat_tasks_deliver_each_digest_once_over_smtp(
    runtime: Wiring, service_env: dict[str, str], sink: SmtpSink, tmp_path: Path
) -> None:
    _subscribe_all(runtime)
    worker = CeleryWorker(service_env, log_path=tmp_path / "worker.log").start()
    try:
        _run_scheduled(runtime, service_env, "papermail.ingest_papers", "ingest")
        _run_scheduled(runtime, service_env, "papermail.build_edition", "edition")
        _run_scheduled(runtime, service_env, "papermail.plan_deliveries", "planning")
        wait_until(lambda: sink.total >= len(READERS), timeout=60, message="3 digests")

        # Running the schedule again sends nothing new.
        _run_scheduled(runtime, service_env, "papermail.plan_deliveries", "planning")
        _run_scheduled(runtime, service_env, "papermail.build_edition", "edition")
        app = make_celery(runtime.settings)
        app.send_task("papermail.redispatch")
        app.close()
        _run_scheduled(runtime, service_env, "papermail.plan_deliveries", "planning")
    finally:
        worker.stop()

    assert dict(sink.received) == {address: 1 for address in READERS}
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Edition)) == 1
        statuses = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    assert statuses == {DeliveryStatus.SENT: len(READERS)}

    messages = {
        m.rcpt_tos[0]: email.message_from_bytes(m.data, policy=policy.default)
        for m in sink.messages
    }
    ada = messages["ada@example.org"]
    assert ada["List-Unsubscribe"].startswith("<https://papers.example.org/unsubscribe/")
    assert ada["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert ada["Message-ID"].endswith("@papers.example.org>")
    assert ada.get_content_type() == "multipart/alternative"
    text = ada.get_body(("plain",)).get_content()
    html = ada.get_body(("html",)).get_content()
    assert "Matches your topic" in text and "Matches your topic" in html
    assert "https://papers.example.org/preferences/" in html
    grace = messages["grace@example.org"]
    assert grace.get_content_type() == "text/plain"
    assert "https://papers.example.org/unsubscribe/" in grace.get_content()
