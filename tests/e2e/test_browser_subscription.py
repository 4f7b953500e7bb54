"""A reader's whole life as a subscriber, in real Chromium with JavaScript off.

uvicorn serves the app on 127.0.0.1 over the real PostgreSQL and Redis; mail goes
to the outbox backend (files). The pipeline runs in-process between page visits:

subscribe -> confirmation email -> its link -> preferences -> pipeline -> digest
reflects the preferences -> one-click POST to its List-Unsubscribe URL -> the
delivery already planned is skipped and the next run sends nothing -> subscribe
again from the page (double opt-in again).

Screenshots of every page at 375 and 1280 px land in test-artifacts/web/.
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
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from tests.conftest import service_missing
from tests.support.browser import ARTIFACTS as BROWSER_ARTIFACTS
from tests.support.browser import snap as shared_snap
from tests.support.dispatch import RecordingDispatcher
from tests.support.server import listening_socket, serving, url_of
from tests.support.services import (
    REDIS_BASE,
    pg_available,
    redis_available,
    sample_items_for,
    temporary_database,
    wait_until,
)

from papermail import ingest_stages, stages
from papermail.clock import utcnow
from papermail.config import Settings
from papermail.db import make_engine, session_scope
from papermail.dbadmin import upgrade
from papermail.models import Delivery, DeliveryStatus, EditionKind, Subscriber, SubscriberStatus
from papermail.sources.hf import parse_page
from papermail.stages import InlineDispatcher
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.web.app import create_app
from papermail.wiring import Wiring

pytestmark = pytest.mark.browser

REDIS_DB = 13  # the web tests' own Redis database
ARTIFACTS = BROWSER_ARTIFACTS / "web"
READER = "reader@example.org"
CONTROL = "control@example.org"


@dataclass
class Site:
    runtime: Wiring
    base_url: str
    outbox: Path

    def messages_to(self, address: str) -> list[EmailMessage]:
        manifest = self.outbox / "manifest.jsonl"
        if not manifest.exists():
            return []
        entries = [json.loads(line) for line in manifest.read_text().splitlines() if line]
        return [
            email.message_from_bytes((self.outbox / e["eml"]).read_bytes(), policy=policy.default)  # type: ignore[misc]
            for e in entries
            if e["recipient"] == address
        ]

    def html_file_of(self, message: EmailMessage) -> Path:
        manifest = (self.outbox / "manifest.jsonl").read_text().splitlines()
        entry = next(
            json.loads(line)
            for line in manifest
            if json.loads(line)["message_id"] == message["Message-ID"]
        )
        return self.outbox / entry["html"]

    def subscriber(self, address: str) -> Subscriber:
        with self.runtime.sessions() as session:
            return session.query(Subscriber).filter_by(email=address).one()


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not pg_available():
        service_missing("PostgreSQL at 127.0.0.1:5432")
    if not redis_available():
        service_missing("Redis at 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp("web-e2e")
    redis_url = f"{REDIS_BASE}/{REDIS_DB}"
    redis_lib.Redis.from_url(redis_url).flushdb()
    sock = listening_socket()
    base_url = url_of(sock)
    with temporary_database(prefix="papermail_web") as db_url:
        engine = make_engine(db_url)
        upgrade(engine)
        engine.dispose()
        settings = Settings(
            _env_file=None,
            database_url=db_url,
            redis_url=redis_url,
            mail_backend="outbox",
            outbox_dir=tmp / "outbox",
            var_dir=tmp / "var",
            base_url=base_url,
            mail_from="papermail <digest@papers.example.org>",
            secret_key="browser-test-secret-key-0123456789abcdef",
        )  # noqa: S106
        runtime = Wiring(settings)
        app = create_app(runtime, dispatcher=InlineDispatcher(runtime))
        try:
            with serving(app, sock=sock):
                yield Site(runtime, base_url, settings.effective_outbox_dir)
        finally:
            runtime.engine.dispose()
            runtime.redis.flushdb()
            runtime.redis.close()


def snap(page, name: str) -> None:  # type: ignore[no-untyped-def]
    shared_snap(page, ARTIFACTS, name)


def _seed(site: Site, *, day: dt.date, id_prefix: str | None = None) -> int:
    """Ingest the bundled sample dated the day before ``day``; build ``day``'s edition."""
    items = sample_items_for(day - dt.timedelta(days=1))
    if id_prefix:  # fresh papers for a later edition (a daily never repeats a paper)
        for n, item in enumerate(items):
            item["paper"]["id"] = f"{id_prefix}.{n:05d}"
    ingest_stages.store_papers(site.runtime, result=parse_page(items), source="test")
    summary = stages.build_edition(site.runtime, day=day, kind=EditionKind.DAILY, rank_hour=6)
    assert summary.edition_id is not None
    return summary.edition_id


def _plan(site: Site, edition_id: int) -> list[int]:
    recorder = RecordingDispatcher()
    stages.plan(
        site.runtime, dispatcher=recorder, now=utcnow(), due_only=False, edition_ids=[edition_id]
    )
    return [i for batch in recorder.batches for i in batch]


def _send(site: Site, ids: list[int]) -> None:
    stages.send_batch(site.runtime, ids)


def _papers_in(digest: EmailMessage) -> list[str]:
    return re.findall(r"^\d+\.\s+(.+)$", _text(digest), flags=re.MULTILINE)


def test_subscribe_confirm_tune_receive_and_leave(site: Site, page) -> None:  # type: ignore[no-untyped-def]
    today = utcnow().date()
    first_edition = _seed(site, day=today)
    with session_scope(site.runtime.sessions) as session:
        add_subscriber(session, email=CONTROL, prefs=Preferences(), now=utcnow(), confirmed=True)

    # The landing page: a sample of the latest edition and the form.
    page.goto(site.base_url + "/")
    assert page.locator("h2#sample-title").inner_text() == "From the latest edition"
    assert page.locator("article.paper").count() == 3
    snap(page, "01-landing")

    # A typo first: the error sits next to the field and what was typed stays.
    page.get_by_label("Email address").fill("reader(at)example.org")
    page.get_by_label("Topics").fill("robotics")
    page.get_by_text("Once a week").click()
    page.get_by_role("button", name="Subscribe").click()
    assert page.locator("#email-error").is_visible()
    assert page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Topics").input_value() == "robotics"
    assert page.locator("#frequency-weekly").is_checked()
    snap(page, "02-landing-error")

    page.get_by_label("Email address").fill(READER)
    page.get_by_text("Every day").click()
    page.get_by_role("button", name="Subscribe").click()
    assert page.get_by_role("heading", name="Check your inbox").is_visible()
    snap(page, "03-check-inbox")
    assert site.subscriber(READER).status is SubscriberStatus.PENDING

    # The confirmation email, from the outbox; its link shows a button (opening it changes
    # nothing: mail scanners open links too), which activates and lands on preferences.
    # Sent by a background task after the response: it may land a moment later.
    wait_until(lambda: len(site.messages_to(READER)) == 1, timeout=10, message="confirmation")
    [confirmation] = site.messages_to(READER)
    link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", _text(confirmation))
    assert link
    page.goto(f"file://{site.html_file_of(confirmation)}")
    snap(page, "04-confirmation-email")
    page.goto(link[0])
    assert page.get_by_role("heading", name="Confirm your subscription").is_visible()
    assert site.subscriber(READER).status is SubscriberStatus.PENDING
    snap(page, "05-confirm-button")
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.wait_for_url("**/preferences/**")
    page.wait_for_load_state()
    assert "/preferences/" in page.url
    assert page.get_by_role("heading", name="You're subscribed").is_visible()
    assert site.subscriber(READER).status is SubscriberStatus.ACTIVE
    assert page.get_by_label("Topics").input_value() == "robotics"
    snap(page, "05b-preferences-welcome")

    # New preferences, with one mistake on the way.
    page.get_by_label("Papers per email").fill("40")
    page.get_by_label("Topics").fill("reinforcement learning")
    page.get_by_label("Time zone").fill("Europe/Paris")
    page.get_by_label("Send hour").select_option("8")
    page.get_by_role("button", name="Save preferences").click()
    assert "from 1 to 30" in page.locator("#max_papers-error").inner_text()
    assert page.get_by_label("Topics").input_value() == "reinforcement learning"
    snap(page, "06-preferences-error")
    page.get_by_label("Papers per email").fill("3")
    page.get_by_role("button", name="Save preferences").click()
    saved = page.locator(".notice.ok").inner_text()
    assert "Papers per email" in saved and "Topics" in saved and "Europe/Paris" in saved
    snap(page, "07-preferences-saved")

    # Run the pipeline: the digest follows the new preferences.
    _send(site, _plan(site, first_edition))
    [digest] = [m for m in site.messages_to(READER) if m["List-Unsubscribe"]]
    papers = _papers_in(digest)
    assert len(papers) == 3
    assert _text(digest).count("Why: Matches your topic \u201creinforcement learning\u201d") >= 1
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = digest["List-Unsubscribe"].strip("<>")
    assert unsubscribe_url.startswith(site.base_url + "/unsubscribe/")
    page.goto(f"file://{site.html_file_of(digest)}")
    snap(page, "08-digest")

    # "View in browser" and the archive.
    view = re.search(r"View in browser: (\S+)", _text(digest))
    assert view
    page.goto(view[1])
    assert page.locator("article.paper").count() == 20
    snap(page, "09-edition-web-copy")
    page.get_by_role("link", name="Archive").first.click()
    assert page.get_by_role("heading", name="Archive").is_visible()
    snap(page, "10-archive")

    # The unsubscribe page (GET changes nothing) ...
    page.goto(unsubscribe_url)
    assert page.get_by_role("button", name="Unsubscribe").is_visible()
    snap(page, "11-unsubscribe")
    assert site.subscriber(READER).status is SubscriberStatus.ACTIVE

    # ... while tomorrow's digests are planned but not yet sent, the mail provider's
    # one-click POST arrives: no cookies, no CSRF token, answered 200.
    second_edition = _seed(site, day=today + dt.timedelta(days=1), id_prefix="2699")
    planned = _plan(site, second_edition)
    assert len(planned) == 2
    response = httpx.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert site.subscriber(READER).status is SubscriberStatus.UNSUBSCRIBED

    # The next run sends to the control reader only; the planned one is skipped.
    before = len(site.messages_to(READER))
    _send(site, planned)
    _send(site, _plan(site, second_edition))
    assert len(site.messages_to(READER)) == before
    assert len([m for m in site.messages_to(CONTROL) if m["List-Unsubscribe"]]) == 2
    with site.runtime.sessions() as session:
        statuses = {
            d.status
            for d in session.query(Delivery)
            .join(Subscriber)
            .filter(Subscriber.email == READER, Delivery.edition_id == second_edition)
        }
    assert statuses == {DeliveryStatus.SKIPPED}

    # Back on the page: they're out, and can come back (double opt-in again).
    page.goto(unsubscribe_url)
    assert page.get_by_role("heading", name="You're not subscribed").is_visible()
    snap(page, "12-unsubscribed")
    page.get_by_role("button", name="Subscribe again").click()
    assert page.get_by_role("heading", name="Check your inbox").is_visible()
    assert site.subscriber(READER).status is SubscriberStatus.UNSUBSCRIBED
    wait_until(
        lambda: len([m for m in site.messages_to(READER) if not m["List-Unsubscribe"]]) == 2,
        timeout=10,
        message="a second confirmation email",
    )

    # A broken link gets a friendly page, not a stack trace.
    page.goto(unsubscribe_url[:-4] + "XXXX")
    assert page.get_by_role("heading", name="This link doesn't work").is_visible()
    snap(page, "13-broken-link")
