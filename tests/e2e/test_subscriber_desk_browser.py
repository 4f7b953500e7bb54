"""The subscriber desk (/ops/subscribers) in a real browser (Debian's Chromium through
Playwright) against uvicorn on 127.0.0.1: search, open a subscriber, suppress them with
a reason, and find it in their status history, at 375 px and 1280 px, without JavaScript.

Screenshots land in test-artifacts/ (not committed): look at them after a run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Response
from sqlalchemy import select
from tests.support.ledger import seed_delivery, seed_edition, seed_subscriber
from tests.support.server import serving

from papermail.config import Settings
from papermail.models import AuditEntry, Base, DeliveryStatus, Subscriber, SubscriberStatus
from papermail.stages import InlineDispatcher
from papermail.web.ops import routes as ops
from papermail.wiring import Wiring

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
USER, PASSWORD = "ops", "correct horse battery staple"
# A reason and an address a hostile hand could have typed: shown as text, never run.
REASON = 'Spam complaint via abuse desk <img src=x onerror="window.pwned=1">'
LONG_ADDRESS = "a.very.long.address.that.could.push.a.narrow.screen.sideways@lab.example.org"


def _seed(rt: Wiring) -> None:
    now = dt.datetime.now(dt.UTC)
    with rt.sessions() as session:
        edition = seed_edition(session, day=now.date(), created_at=now - dt.timedelta(hours=2))
        ada = seed_subscriber(session, email="ada@lab.example.org")
        ada.confirmed_at = now - dt.timedelta(days=20)
        seed_delivery(
            session,
            edition=edition,
            subscriber=ada,
            status=DeliveryStatus.SENT,
            created_at=now - dt.timedelta(hours=1),
        )
        seed_subscriber(session, email="grace@navy.example.org")
        seed_subscriber(session, email=LONG_ADDRESS, status=SubscriberStatus.PENDING)
        for n in range(12):
            seed_subscriber(session, email=f"reader{n:02d}@example.net")
        session.commit()


@pytest.fixture
def runtime(settings: Settings) -> Wiring:
    fields = settings.model_dump(include={"var_dir", "base_url", "mail_from", "secret_key"})
    rt = Wiring(Settings(_env_file=None, **fields, ops_password=PASSWORD, mail_backend="memory"))
    Base.metadata.create_all(rt.engine)
    _seed(rt)
    return rt


def _app(rt: Wiring) -> FastAPI:
    app = FastAPI()
    ops.attach_ops(app, wiring=rt, dispatcher=InlineDispatcher(rt), celery=None)
    css = (rt.settings.templates_dir / "web" / "papermail.css").read_text(encoding="utf-8")

    @app.get("/static/papermail.css")
    def stylesheet() -> Response:  # served by the real app (web/app.py) in production
        return Response(css, media_type="text/css")

    return app


@pytest.fixture
def server(runtime: Wiring) -> Iterator[str]:
    with serving(_app(runtime)) as url:
        yield url


def _page(browser, width: int):  # type: ignore[no-untyped-def]
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        http_credentials={"username": USER, "password": PASSWORD},
        java_script_enabled=False,  # the desk is plain HTML forms
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return context, page, problems


def _no_sideways_scroll(page) -> None:  # type: ignore[no-untyped-def]
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


@pytest.mark.parametrize("width", [375, 1280])
def test_search_open_suppress_and_see_it_in_the_history(  # type: ignore[no-untyped-def]
    browser, server: str, runtime: Wiring, width: int
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context, page, problems = _page(browser, width)
    page.goto(f"{server}/ops")
    page.get_by_role("link", name="Subscribers").first.click()
    page.wait_for_url("**/ops/subscribers")
    assert page.locator("h1").inner_text() == "Subscribers"
    _no_sideways_scroll(page)
    page.screenshot(path=str(ARTIFACTS / f"desk-list-{width}.png"), full_page=True)

    # Search: part of the address, any case.
    page.get_by_label("Address contains").fill("LAB.example")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/ops/subscribers?q=LAB.example*")
    assert page.locator("#results-count").inner_text().startswith("2 found")
    assert page.get_by_role("link", name="grace@navy.example.org").count() == 0
    _no_sideways_scroll(page)

    # Open a subscriber.
    page.get_by_role("link", name="ada@lab.example.org").click()
    page.wait_for_url("**/ops/subscribers/*")
    assert page.locator("#subscriber-email").inner_text() == "ada@lab.example.org"
    assert page.locator("#subscriber-status").inner_text() == "active"
    assert "sent" in page.locator("#deliveries-title + .table-wrap").inner_text()
    _no_sideways_scroll(page)

    # Suppress with a reason; the browser insists on one before the server does.
    page.get_by_label("Reason").fill(REASON)
    page.get_by_role("button", name="Suppress").click()
    page.wait_for_url("**/ops/subscribers/*?done=suppressed")
    assert "Suppressed: nothing more is mailed" in page.locator("#notice").inner_text()
    assert page.locator("#subscriber-status").inner_text() == "suppressed"
    history = page.locator("#history table")
    last = history.locator("tbody tr").last
    cells = [c.strip() for c in last.locator("td").all_inner_texts()]
    assert cells[1:] == ["suppressed (was active)", USER, REASON]
    assert page.evaluate("window.pwned === undefined")  # the reason was text, not HTML
    assert page.get_by_role("button", name="Unsuppress").is_visible()
    _no_sideways_scroll(page)
    page.screenshot(path=str(ARTIFACTS / f"desk-suppressed-{width}.png"), full_page=True)

    with runtime.sessions() as session:
        ada = session.scalar(select(Subscriber).where(Subscriber.email == "ada@lab.example.org"))
        assert ada is not None and ada.status is SubscriberStatus.SUPPRESSED
        [entry] = session.scalars(select(AuditEntry))
        assert (entry.actor, entry.reason) == (USER, REASON)
    assert problems == []  # no CSP violations, no errors
    context.close()


def test_a_long_address_and_the_pager_fit_a_narrow_screen(browser, server: str) -> None:  # type: ignore[no-untyped-def]
    context, page, problems = _page(browser, 375)
    page.goto(f"{server}/ops/subscribers?q=very.long")
    page.get_by_role("link", name=LONG_ADDRESS).click()
    page.wait_for_url("**/ops/subscribers/*")
    _no_sideways_scroll(page)
    page.screenshot(path=str(ARTIFACTS / "desk-long-address-375.png"), full_page=True)
    assert problems == []
    context.close()
