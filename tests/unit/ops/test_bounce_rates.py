"""Bounce and complaint rates per day and over the last 24 hours, the /ops chart's
geometry, and `papermail status`'s line."""

from __future__ import annotations

import datetime as dt

import pytest
from rich.console import Console
from sqlalchemy.orm import Session

from papermail.bounces.events import store
from papermail.cli.status import status_view
from papermail.models import BounceKind, BounceSource, DeliveryStatus
from papermail.ops import bounce_rates
from papermail.ops.bounce_rates import LIMIT, BounceWindow
from papermail.ops.monitoring import Snapshot
from papermail.web.ops.bounce_chart import bounce_chart
from tests.unit.bounces.conftest import add_delivery, add_subscriber

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
YESTERDAY = TODAY - dt.timedelta(days=1)


def _sent(session: Session, count: int, day: dt.date, hour: int = 7) -> None:
    for n in range(count):
        subscriber = add_subscriber(session, f"r{day:%d}-{hour}-{n}@example.org")
        at = dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)
        add_delivery(session, subscriber, day=day, sent_at=at)


def _event(session: Session, kind: BounceKind, at: dt.datetime, n: int) -> None:
    subscriber = add_subscriber(session, f"e{n}@example.org")
    store(
        session,
        kind=kind,
        source=BounceSource.SMTP,
        subscriber_id=subscriber.id,
        delivery_id=None,
        recipient=subscriber.email,
        status=None,
        diagnostic=None,
        message=f"m{n}",
        now=at,
    )


def _seed(session: Session) -> None:
    _sent(session, 200, YESTERDAY)
    _sent(session, 100, TODAY)
    add_delivery(
        session, add_subscriber(session, "pending@example.org"), status=DeliveryStatus.PENDING
    )
    yesterday_9 = dt.datetime.combine(YESTERDAY, dt.time(9), tzinfo=dt.UTC)
    for n in range(2):
        _event(session, BounceKind.HARD, yesterday_9, n)
    _event(session, BounceKind.COMPLAINT, yesterday_9, 10)
    _event(session, BounceKind.SOFT, NOW - dt.timedelta(hours=1), 20)
    _event(session, BounceKind.COMPLAINT, NOW - dt.timedelta(hours=2), 21)
    _event(session, BounceKind.HARD, NOW - dt.timedelta(days=30), 30)  # out of every window
    session.commit()


def test_rates_per_day_are_each_days_events_over_its_sent_messages(session: Session) -> None:
    _seed(session)

    days = bounce_rates.daily(session, today=TODAY, days=3)

    assert [d.start.date() for d in days] == [TODAY - dt.timedelta(days=2), YESTERDAY, TODAY]
    before, yesterday, today = days
    assert (before.sent, before.hard, before.bounce_rate) == (0, 0, None)
    assert (yesterday.sent, yesterday.hard, yesterday.complaints) == (200, 2, 1)
    assert yesterday.bounce_rate == 0.01 and yesterday.complaint_rate == 0.005
    assert (today.sent, today.soft, today.complaints, today.hard) == (100, 1, 1, 0)
    assert today.complaint_rate == 0.01 and today.over_limit


def test_the_last_24_hours_straddle_two_days(session: Session) -> None:
    _seed(session)

    window = bounce_rates.last_24h(session, now=NOW)

    # Yesterday's sends (07:00) and events (09:00) are 29 and 27 hours old: outside.
    assert (window.sent, window.hard, window.soft, window.complaints) == (100, 0, 1, 1)
    assert (
        window.describe()
        == "0 hard · 1 soft · 1 complaints; 100 sent: 0.00% bounced, 1.00% complained"
    )


def test_nothing_sent_has_no_rate() -> None:
    window = BounceWindow(start=NOW, end=NOW, hard=1)

    assert window.bounce_rate is None and not window.over_limit
    assert window.describe().endswith("nothing sent")


def test_the_chart_draws_each_day_against_the_line() -> None:
    start = dt.datetime(2026, 11, 13, tzinfo=dt.UTC)
    days = tuple(
        BounceWindow(
            start=start + dt.timedelta(days=i),
            end=start + dt.timedelta(days=i + 1),
            sent=1000,
            hard=i,
            complaints=1 if i == 13 else 0,
        )
        for i in range(14)
    )

    chart = bounce_chart(days)

    assert len(chart.bounced) == len(chart.complained) == 14
    frame = chart.frame
    assert frame.top < chart.limit_y < frame.baseline
    # 1.3% is the worst day: the axis reaches 2%; the 0.3% line sits at 15% of the height.
    assert [t.label for t in frame.y_ticks] == ["0%", "1%", "2%"]
    assert chart.limit_y == pytest.approx(frame.baseline - frame.plot_h * 0.15)
    assert chart.bounced[13].h == pytest.approx(frame.plot_h * 0.65)
    assert chart.complained[13].h == pytest.approx(frame.plot_h * 0.05)
    assert "the worst day, 2026-11-26, 1.30% bounced and 0.10% complained" in frame.summary
    assert [t.label for t in frame.x_ticks] == ["19 Nov", "26 Nov"]


def test_a_quiet_fortnight_still_shows_the_line() -> None:
    start = dt.datetime(2026, 11, 13, tzinfo=dt.UTC)
    days = tuple(BounceWindow(start=start, end=start) for _ in range(14))

    chart = bounce_chart(days)

    assert chart.frame.y_ticks[-1].label == "0.5%"
    assert chart.frame.summary.endswith("nothing sent.")
    assert chart.limit_y > chart.frame.top


def test_status_prints_the_last_24_hours_in_one_line() -> None:
    window = BounceWindow(
        start=NOW - dt.timedelta(hours=24), end=NOW, sent=2000, hard=3, soft=1, complaints=8
    )
    console = Console(width=100, record=True, color_system=None)

    console.print(
        status_view(Snapshot(taken_at=NOW, embedded=True, paused=None, bounces_24h=window))
    )

    text = console.export_text()
    assert (
        "Bounces, last 24 h: 3 hard · 1 soft · 8 complaints; 2,000 sent: 0.15% bounced, 0.40%"
        in text
    )
    assert window.over_limit and LIMIT == 0.003
