"""A digest card's "Less like this", in real Chromium with JavaScript off, at 375 px.

Embedded services (SQLite, fakeredis, the memory mail backend) behind uvicorn on
127.0.0.1: the pipeline sends a digest, the browser opens a card's feedback link from
it, nothing scrolls sideways, one click records it and the page says what changed;
then a mute, and the preferences page lists both with their undo buttons.

Screenshots at 375 and 1280 px land in test-artifacts/feedback/.
"""

from __future__ import annotations

import datetime as dt
import email
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.support.browser import ARTIFACTS as BROWSER_ARTIFACTS
from tests.support.browser import snap as shared_snap
from tests.support.server import listening_socket, serving, url_of

from papermail import ingest_stages, stages
from papermail.clock import utcnow
from papermail.config import Settings
from papermail.db import session_scope
from papermail.dbadmin import upgrade
from papermail.delivery.memory import MemoryBackend
from papermail.models import EditionKind, Feedback, FeedbackDirection, Paper, Subscriber
from papermail.sources.hf import parse_page
from papermail.stages import InlineDispatcher
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.subscribers.tokens import Purpose
from papermail.web.app import create_app
from papermail.wiring import Wiring

pytestmark = pytest.mark.browser

ARTIFACTS = BROWSER_ARTIFACTS / "feedback"
READER = "reader@example.org"


@dataclass
class Site:
    runtime: Wiring
    base_url: str
    backend: MemoryBackend

    def digests_to(self, address: str) -> list[EmailMessage]:
        parsed = [
            email.message_from_bytes(m.data, policy=policy.default) for m in self.backend.outbox
        ]
        return [m for m in parsed if m["To"] == address and m["List-Unsubscribe"]]  # type: ignore[misc]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("feedback-e2e")
    sock = listening_socket()
    base_url = url_of(sock)
    settings = Settings(
        _env_file=None,  # no database or Redis URL: embedded (SQLite, fakeredis)
        var_dir=tmp / "var",
        mail_backend="memory",
        base_url=base_url,
        mail_from="papermail <digest@papers.example.org>",
        secret_key="browser-test-secret-key-0123456789abcdef",
    )  # noqa: S106
    runtime = Wiring(settings)
    upgrade(runtime.engine)  # through the migrations, 0003 included
    backend = runtime.backend
    assert isinstance(backend, MemoryBackend)
    app = create_app(runtime, dispatcher=InlineDispatcher(runtime))
    try:
        with serving(app, sock=sock):
            yield Site(runtime, base_url, backend)
    finally:
        runtime.engine.dispose()


def snap(page, name: str) -> None:  # type: ignore[no-untyped-def]
    shared_snap(page, ARTIFACTS, name)


def _sample_items(day: dt.date) -> list[dict[str, object]]:
    """The bundled sample, re-dated to ``day``."""
    raw = json.loads(
        resources.files("papermail.data").joinpath("sample_daily_papers.json").read_text("utf-8")
    )
    for item in raw:
        paper = item.get("paper") or {}
        if isinstance(paper.get("submittedOnDailyAt"), str):
            paper["submittedOnDailyAt"] = f"{day}T" + paper["submittedOnDailyAt"].split("T", 1)[1]
    return raw


def _send_digest(site: Site) -> EmailMessage:
    today = utcnow().date()
    items = _sample_items(today - dt.timedelta(days=1))
    ingest_stages.store_papers(site.runtime, result=parse_page(items), source="test")
    summary = stages.build_edition(site.runtime, day=today, kind=EditionKind.DAILY, rank_hour=6)
    assert summary.edition_id is not None
    with session_scope(site.runtime.sessions) as session:
        add_subscriber(
            session, email=READER, prefs=Preferences(max_papers=5), now=utcnow(), confirmed=True
        )
    stages.plan(
        site.runtime,
        dispatcher=InlineDispatcher(site.runtime),
        now=utcnow(),
        due_only=False,
        edition_ids=[summary.edition_id],
    )
    [digest] = site.digests_to(READER)
    return digest


def _html(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_a_card_feedback_link_records_with_one_click_at_375px(
    site: Site, page, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    digest = _send_digest(site)
    markup = _html(digest)
    less = re.findall(r'<a href="([^"]+/feedback/[^"]+)"[^>]*>Less like this</a>', markup)
    assert len(less) == 5  # one per card
    paper_id = site.runtime.links.signer.read_feedback(less[0].rsplit("/", 1)[1]).paper_id
    with site.runtime.sessions() as session:
        paper = session.get(Paper, paper_id)
        assert paper is not None
        first_title = " ".join(paper.title.split())

    # The digest itself, as a mail client would show it.
    (tmp_path / "digest.html").write_text(markup, encoding="utf-8")
    page.goto(f"file://{tmp_path / 'digest.html'}")
    assert page.get_by_role("link", name="More like this").count() == 5
    snap(page, "01-digest")

    # The link from the email: the paper and one button; opening it changed nothing.
    page.goto(less[0])
    assert page.get_by_role("heading", name="Less like this?").is_visible()
    assert page.get_by_role("heading", name=first_title).is_visible()
    assert page.get_by_role("button", name="Show me fewer like this").count() == 1
    snap(page, "02-feedback-page")
    with site.runtime.sessions() as session:
        assert session.scalars(select(Feedback)).all() == []

    # One click (a plain form POST, no JavaScript): recorded, and the page says so.
    page.get_by_role("button", name="Show me fewer like this").click()
    said = page.locator(".notice.ok").inner_text()
    assert said == f"You'll see fewer like \u201c{first_title}\u201d."
    assert page.get_by_role("button", name="Undo").is_visible()
    snap(page, "03-feedback-recorded")
    with site.runtime.sessions() as session:
        (mark,) = session.scalars(select(Feedback)).all()
        assert mark.direction is FeedbackDirection.LESS

    # Mute the paper's first author from the same page.
    mute = page.locator("button[name=mute_author]").first
    author = mute.get_attribute("value")
    assert author
    mute.click()
    assert f"You won't get papers by {author} any more." in page.locator(".notice.ok").inner_text()
    assert page.get_by_text(f"{author} is muted").is_visible()
    snap(page, "04-feedback-muted")

    # The preferences page lists the mark and the muted name, each with a way back.
    with site.runtime.sessions() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == READER)).one()
        assert reader.muted_authors == [author]
        token = site.runtime.links.signer.make(
            Purpose.PREFERENCES, subscriber_id=reader.id, token_version=reader.token_version
        )
    page.goto(f"{site.base_url}/preferences/{token}")
    marked = page.locator("#marked")
    assert marked.get_by_role("link", name=first_title).is_visible()
    assert marked.get_by_text("Less like this", exact=True).is_visible()
    assert page.locator("#muted .mark-title").get_by_text(author, exact=True).is_visible()
    snap(page, "05-preferences-marked")
    marked.get_by_role("button", name=f"Undo \u201c{first_title}\u201d").click()
    assert "Undone" in page.locator(".notice.ok").inner_text()
    page.locator("#muted").get_by_role("button", name=f"Unmute {author}").click()
    assert f"Unmuted {author}" in page.locator(".notice.ok").inner_text()
    snap(page, "06-preferences-undone")
    with site.runtime.sessions() as session:
        assert session.scalars(select(Feedback)).all() == []
        reader = session.scalars(select(Subscriber).where(Subscriber.email == READER)).one()
        assert reader.muted_authors == []
