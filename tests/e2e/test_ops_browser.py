"""/ops in a real browser (Debian's Chromium through Playwright) against uvicorn on 127.0.0.1.

Screenshots land in test-artifacts/ (not committed): look at them after a run.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Response
from tests.support.ledger import seed_delivery, seed_edition, seed_funnel, seed_subscriber
from tests.support.server import serving

from papermail.config import Settings
from papermail.models import Base, DeliveryStatus, EditionKind, SubscriberStatus
from papermail.ops import history as ops_history
from papermail.ops.broker import QueueDepth
from papermail.ops.control import sending_paused
from papermail.ops.jobs import recorded
from papermail.stages import InlineDispatcher
from papermail.web.ops import routes as ops
from papermail.wiring import Wiring

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
USER, PASSWORD = "ops", "correct horse battery staple"


def _seed(rt: Wiring) -> None:
    """A plausible day: a busy send window, some failures, a few runs, a sampled queue."""
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(7)
    with rt.sessions() as session:
        yesterday = seed_edition(
            session, day=now.date() - dt.timedelta(days=1), created_at=now - dt.timedelta(days=1)
        )
        today = seed_edition(session, day=now.date(), created_at=now - dt.timedelta(hours=3))
        seed_edition(
            session,
            day=now.date() - dt.timedelta(days=now.weekday()),
            kind=EditionKind.WEEKLY,
            created_at=now - dt.timedelta(days=2),
        )
        for hours_ago in range(24):
            for _ in range(rng.randint(0, 3) + (12 if hours_ago in (2, 3) else 0)):
                seed_delivery(
                    session,
                    edition=yesterday,
                    status=DeliveryStatus.SENT,
                    created_at=now - dt.timedelta(hours=hours_ago, minutes=30),
                    sent_at=now - dt.timedelta(hours=hours_ago, minutes=rng.randint(1, 59)),
                )
        seed_funnel(
            session,
            today,
            {
                "pending": 14,
                "sending": 3,
                "sent": 46,
                "retry": 4,
                "failed": 3,
                "suppressed": 2,
                "skipped": 1,
            },
            created_at=now - dt.timedelta(minutes=20),
        )
        seed_delivery(
            session,
            edition=today,
            status=DeliveryStatus.FAILED,
            created_at=now - dt.timedelta(minutes=20),
            last_error="bounced: 550 5.1.1 <ghost@example.org> no such user",
        )
        seed_subscriber(session, status=SubscriberStatus.PENDING)
        seed_subscriber(session, status=SubscriberStatus.UNSUBSCRIBED)
        session.commit()
    stamps = iter(now - dt.timedelta(minutes=m) for m in (95, 94, 64, 63, 35, 34))
    clock = lambda: next(stamps)  # noqa: E731
    with recorded(rt.sessions, stage="ingest", clock=clock) as detail:
        detail.update(fetched=48, inserted=6, updated=42, rejected=1)
    with recorded(rt.sessions, stage="edition", clock=clock) as detail:
        detail.update(edition_id=2, kind="daily", created=True, papers=40)
    with recorded(rt.sessions, stage="planning", clock=clock) as detail:
        detail.update(planned=73, batches=1)
    failed = 0
    for minutes_ago in range(24 * 60, 0, -10):
        depth = (
            max(0, int(400 * (1 - abs(minutes_ago - 170) / 60))) if 110 < minutes_ago < 230 else 0
        )
        failed += 1 if rng.random() < 0.04 else 0
        ops_history.record_sample(
            rt.redis,
            failed=failed,
            min_interval=dt.timedelta(0),
            queues=[
                QueueDepth("papermail.pipeline", rng.randint(0, 1), 0),
                QueueDepth("papermail.send", depth, 2 if depth else 0),
            ],
            now=now - dt.timedelta(minutes=minutes_ago),
        )


@pytest.fixture
def runtime(settings: Settings) -> Wiring:
    fields = settings.model_dump(include={"var_dir", "base_url", "mail_from", "secret_key"})
    rt = Wiring(Settings(_env_file=None, **fields, ops_password=PASSWORD))
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
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return context, page, problems


@pytest.mark.parametrize("width", [375, 1280])
def test_dashboard_renders_figures_and_charts(browser, server: str, width: int) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    context, page, problems = _page(browser, width)
    page.goto(f"{server}/ops")
    page.screenshot(path=str(ARTIFACTS / f"ops-{width}.png"), full_page=True)

    assert page.locator("h1").inner_text() == "Operations"
    assert page.locator(".chart svg rect.bar").count() >= 24
    assert page.locator(".chart polyline.line").count() == 2
    assert page.locator("#funnel-title").is_visible()
    assert "Retry 4 failed" in page.locator("#editions-title + .table-wrap").inner_text()
    # Nothing wider than the screen except inside the scrollable table wrappers.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert problems == []  # no CSP violations, no script errors
    context.close()


def test_pause_and_resume_from_the_page(browser, server: str, runtime: Wiring) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    context, page, problems = _page(browser, 1280)
    page.goto(f"{server}/ops")

    page.get_by_role("button", name="Pause sending").click()
    page.wait_for_url("**/ops?done=paused*")
    assert sending_paused(runtime.redis)
    assert "Sending paused" in page.locator("#notice").inner_text()
    page.screenshot(path=str(ARTIFACTS / "ops-paused-1280.png"))

    page.get_by_role("button", name="Resume sending").click()
    page.wait_for_url("**/ops?done=resumed*")
    assert not sending_paused(runtime.redis)
    assert page.get_by_role("button", name="Pause sending").is_visible()
    assert problems == []
    context.close()


def test_auto_refresh_swaps_in_fresh_figures(browser, server: str, runtime: Wiring) -> None:  # type: ignore[no-untyped-def]
    context, page, problems = _page(browser, 1280)
    page.goto(f"{server}/ops")
    assert page.get_by_role("button", name="Pause sending").is_visible()

    runtime.redis.set("papermail:control:paused", "2026-01-01T00:00:00+00:00 from elsewhere")
    # ops.js polls /ops/panel; trigger it now instead of waiting REFRESH_SECONDS.
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.get_by_role("button", name="Resume sending").wait_for(timeout=10_000)
    assert "from elsewhere" in page.locator("#live").inner_text()
    assert problems == []
    context.close()
