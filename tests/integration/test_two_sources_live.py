"""Both sources through the production topology: a real Celery worker ingests Hugging Face
Daily Papers and arXiv's new submissions from loopback stand-ins, builds the edition and
mails each reader over SMTP. A paper only arXiv announced reaches only the readers who
follow one of its categories, beside the trending papers everyone can get."""

from __future__ import annotations

import datetime as dt
import email
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import func, select
from workers.celery_app import beat_schedule, make_celery

from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.models import JobRun, MailFormat, Paper
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.wiring import Wiring
from papermail_dev.smtpsink import SmtpSink
from tests.support.services import CeleryWorker, FakeArxiv, wait_until

pytestmark = pytest.mark.integration

ROBOTICS = ["legged locomotion", "grasp detection"]
READERS = {
    # Follows cs.RO: new robotics papers on arXiv reach her beside the trending ones.
    "rosalind@example.org": Preferences(topics=ROBOTICS, arxiv_categories=["cs.RO"], max_papers=8),
    # The same topics, no category: papers only arXiv announced are not for him.
    "alan@example.org": Preferences(topics=ROBOTICS, max_papers=8),
    # Follows nothing at all: everyone's trending list.
    "grace@example.org": Preferences(format=MailFormat.TEXT, max_papers=5),
}
# In the recorded day (tests/fixtures/arxiv/day_2026-11-26_p*.xml), new on its "yesterday".
LOCOMOTION = "2611.40001"  # primary cs.RO
GRASPING = "2611.40002"  # primary cs.CV, cross-listed to cs.RO
ARXIV_ONLY_IN_EDITION = {
    LOCOMOTION,
    GRASPING,
    "2611.40003",
    "2611.40004",
    "2611.40005",
    "2611.40007",
    "2611.40008",
}


@pytest.fixture
def fake_arxiv() -> Iterator[FakeArxiv]:
    yesterday = lambda: dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # noqa: E731
    with FakeArxiv(yesterday) as fake:
        yield fake


@pytest.fixture
def env(service_env: dict[str, str], fake_arxiv: FakeArxiv) -> dict[str, str]:
    return {
        **service_env,
        "PAPERMAIL_ARXIV_API_BASE": fake_arxiv.base_url,
        "PAPERMAIL_ARXIV_PAUSE_SECONDS": "0",  # a loopback stand-in, not arXiv
        "PAPERMAIL_ARXIV_PAGE_SIZE": "5",  # the recorded pages' size, so the fetch pages
    }


def _subscribe_all(rt: Wiring) -> None:
    with session_scope(rt.sessions) as session:
        for address, prefs in READERS.items():
            # send_hour 0 local: everyone's send hour has come today, whatever the clock says.
            prefs = prefs.model_copy(update={"send_hour": 0})
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


def _run_scheduled(rt: Wiring, task: str, stage: str) -> None:
    """Publish a task exactly as beat's schedule names it; wait for its journal entry."""
    entry = next(e for e in beat_schedule(rt.settings).values() if e["task"] == task)
    before = _finished_runs(rt, stage)
    app = make_celery(rt.settings)
    app.send_task(task, kwargs=entry.get("kwargs") or {})
    app.close()
    wait_until(lambda: _finished_runs(rt, stage) > before, timeout=60, message=f"{task} to run")
    if stage == "ingest":
        # Both ingests share one lock; one taken a moment too long sends the next to retry
        # in two minutes. The journal closes just before the lock is let go.
        wait_until(
            lambda: not rt.redis.exists("papermail:lock:ingest"),
            timeout=10,
            message="the ingest lock to be released",
        )


def _cards(message: EmailMessage) -> dict[str, str]:
    """The text part's papers, by arXiv id (each card links its abstract)."""
    body = message.get_body(("plain",))
    assert body is not None
    cards = re.split(r"\n(?=\d+\. )", body.get_content())[1:]
    found = {}
    for card in cards:
        link = re.search(r"https://arxiv\.org/abs/(\S+)", card)
        assert link is not None, card
        found[link[1]] = card
    return found


def test_a_worker_ingests_both_sources_and_arxiv_only_papers_reach_their_followers(
    runtime: Wiring, env: dict[str, str], sink: SmtpSink, fake_arxiv: FakeArxiv, tmp_path: Path
) -> None:
    _subscribe_all(runtime)
    worker = CeleryWorker(env, log_path=tmp_path / "worker.log").start()
    try:
        _run_scheduled(runtime, "papermail.ingest_papers", "ingest")
        _run_scheduled(runtime, "papermail.ingest_arxiv", "ingest")
        _run_scheduled(runtime, "papermail.build_edition", "edition")
        _run_scheduled(runtime, "papermail.plan_deliveries", "planning")
        wait_until(lambda: sink.total >= len(READERS), timeout=60, message="3 digests")
    finally:
        worker.stop()

    # arXiv was asked politely: a User-Agent that says who asks, one request at a time,
    # paging by `start` until the recorded answers ran out, then by id for the featured
    # papers those pages did not describe.
    requests = fake_arxiv.requests
    new, by_id = requests[:2], requests[2:]
    assert [(r.start, r.max_results) for r in new] == [(0, 5), (5, 5)]
    assert all("cat:cs.RO" in r.search_query for r in new)
    assert len(by_id) == 1 and by_id[0].id_list and not by_id[0].search_query
    assert all(r.user_agent.startswith("papermail/") for r in requests)
    assert all("https://papers.example.org" in r.user_agent for r in requests)
    assert not any(r.overlapped for r in requests)
    assert all(a.ended <= b.began for a, b in pairwise(requests))
    with runtime.sessions() as session:
        runs = list(session.scalars(select(JobRun).where(JobRun.stage == "ingest")))
        papers = {p.id: p for p in session.scalars(select(Paper))}
    asked = set(by_id[0].id_list.split(","))
    featured = {i for i, p in papers.items() if p.submitted_on_daily_at is not None}
    assert asked <= featured and not {i for i in asked if papers[i].source == "arxiv"}
    assert sorted((r.detail["source"], r.ok) for r in runs) == [("arxiv", True), ("hf", True)]
    assert [r.detail["pages"] for r in runs if r.detail["source"] == "arxiv"] == [2]
    assert {i for i, p in papers.items() if p.source == "arxiv"} >= ARXIV_ONLY_IN_EDITION
    assert papers[GRASPING].categories == ["cs.CV", "cs.RO", "cs.LG"]

    assert dict(sink.received) == {address: 1 for address in READERS}
    messages = {
        m.rcpt_tos[0]: email.message_from_bytes(m.data, policy=policy.default)
        for m in sink.messages
    }
    digests = {address: _cards(message) for address, message in messages.items()}

    rosalind = digests["rosalind@example.org"]
    arxiv_only = {pid: card for pid, card in rosalind.items() if "New on arXiv" in card}
    trending = {pid: card for pid, card in rosalind.items() if "Trending on Hugging Face" in card}
    assert LOCOMOTION in arxiv_only and trending
    assert "New on arXiv · cs.RO" in arxiv_only[LOCOMOTION]
    assert "Legged Locomotion from Sparse" in arxiv_only[LOCOMOTION]
    assert "PDF: https://arxiv.org/pdf/2611.40001" in arxiv_only[LOCOMOTION]
    assert "Why: Matches your topic “legged locomotion”" in arxiv_only[LOCOMOTION]
    assert set(arxiv_only) <= ARXIV_ONLY_IN_EDITION
    html = messages["rosalind@example.org"].get_body(("html",))
    assert html is not None and "New on arXiv · cs.RO" in html.get_content()

    for address in ("alan@example.org", "grace@example.org"):
        assert not set(digests[address]) & ARXIV_ONLY_IN_EDITION, address
        assert not [c for c in digests[address].values() if "New on arXiv" in c], address
    assert digests["alan@example.org"]  # he still gets his robotics from the trending pool
