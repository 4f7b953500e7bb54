"""One click teaches the next digest, on the production topology: a real Celery worker
plans and sends over SMTP (PostgreSQL, Redis), the reader's "More like this" goes through
the web app as a scanner-proof GET then one POST, and the next edition's digest changes."""

from __future__ import annotations

import datetime as dt
import email
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from workers.celery_app import make_celery

from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.dbadmin import upgrade
from papermail.models import (
    Edition,
    EditionItem,
    EditionKind,
    Feedback,
    FeedbackDirection,
    Paper,
)
from papermail.pipeline.ingest import ingest_papers
from papermail.sources.hf import load_sample
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.web.app import create_app
from papermail.wiring import Wiring
from papermail_dev.smtpsink import SmtpSink
from tests.support.dispatch import RecordingDispatcher
from tests.support.services import CeleryWorker, wait_until

pytestmark = pytest.mark.integration

# Both readers want only what is picked for them, and have said nothing yet: their first
# digests are identical. Only Ada will click.
FOR_ME = Preferences(max_papers=3, relevance_weight=1.0, send_hour=0)
MORE_LINK = re.compile(r"More like this: (https://papers\.example\.org/feedback/\S+)")


LATER = dt.timedelta(days=30)  # an edition dated ahead is not "the latest" yet


def _seed_two_editions(rt: Wiring) -> None:
    """Yesterday's daily edition, and today's held back: each half of the sample's papers."""
    today = utcnow().date()
    with session_scope(rt.sessions) as session:
        ingest_papers(session, result=load_sample(), now=utcnow())
        papers = sorted(session.scalars(select(Paper.id)))
        for day, half in (
            (today - dt.timedelta(days=1), papers[0::2]),
            (today + LATER, papers[1::2]),
        ):
            edition = Edition(day=day, kind=EditionKind.DAILY, created_at=utcnow())
            edition.items = [
                EditionItem(paper_id=pid, rank=i + 1, score=1.0 / (i + 1))
                for i, pid in enumerate(half)
            ]
            session.add(edition)


def _publish_todays_edition(rt: Wiring) -> None:
    today = utcnow().date()
    with session_scope(rt.sessions) as session:
        held = session.scalar(select(Edition).where(Edition.day == today + LATER))
        assert held is not None
        held.day, held.created_at = today, utcnow()


def _plan(rt: Wiring) -> None:
    app = make_celery(rt.settings)
    app.send_task("papermail.plan_deliveries", kwargs={"due_only": False})
    app.close()


def _messages(sink: SmtpSink) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for m in sink.messages:
        parsed = email.message_from_bytes(m.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        found.setdefault(m.rcpt_tos[0], []).append(parsed)
    return found


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def _titles(message: EmailMessage) -> list[str]:
    return re.findall(r"^\d+\. (.+)$", _text(message), flags=re.MULTILINE)


def test_more_like_this_changes_the_next_edition(
    runtime: Wiring, service_env: dict[str, str], sink: SmtpSink, tmp_path: Path
) -> None:
    upgrade(runtime.engine)
    _seed_two_editions(runtime)
    with session_scope(runtime.sessions) as session:
        for address in ("ada@example.org", "bob@example.org"):
            add_subscriber(session, email=address, prefs=FOR_ME, now=utcnow(), confirmed=True)
    worker = CeleryWorker(service_env, log_path=tmp_path / "worker.log").start()
    try:
        _plan(runtime)
        wait_until(lambda: sink.total >= 2, timeout=60, message="the first two digests")
        first = _messages(sink)
        assert _titles(first["ada@example.org"][0]) == _titles(first["bob@example.org"][0])

        # Ada clicks "More like this" on her third card. A scanner's GET changes nothing.
        link = MORE_LINK.findall(_text(first["ada@example.org"][0]))[2]
        path = link.removeprefix("https://papers.example.org")
        web = TestClient(
            create_app(runtime, dispatcher=RecordingDispatcher()), base_url="https://testserver"
        )
        with web:
            assert web.get(path).status_code == 200
            with runtime.sessions() as session:
                assert session.scalars(select(Feedback)).all() == []
            response = web.post(path, data={"do": "record"})
            assert response.status_code == 200
            assert "You&#39;ll see more like" in response.text
        with runtime.sessions() as session:
            [mark] = session.scalars(select(Feedback)).all()
            assert mark.direction is FeedbackDirection.MORE
            liked = session.get(Paper, mark.paper_id)
            assert liked is not None
            liked_title = " ".join(liked.title.split())
        _publish_todays_edition(runtime)  # the worker plans and sends it
        _plan(runtime)
        wait_until(lambda: sink.total >= 4, timeout=60, message="the next two digests")
    finally:
        worker.stop()

    second = _messages(sink)
    ada, bob = second["ada@example.org"][1], second["bob@example.org"][1]
    assert _titles(ada) != _titles(bob)  # the click, and only the click, made the difference
    assert f"Similar to \u201c{liked_title}\u201d, which you liked" in " ".join(_text(ada).split())
    assert "which you liked" not in _text(bob)
