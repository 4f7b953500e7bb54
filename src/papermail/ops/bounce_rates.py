"""Bounce and complaint rates: what mailbox providers judge a sender by.

Rates are events over messages sent in the same span: a day (UTC) for the /ops chart, the
last 24 hours for `papermail status`. Bounces count hard bounces, late (a DSN, a webhook)
and in-session (a 5xx) alike; soft ones are shown but not in the rate. Complaints count
every "this is spam". ``LIMIT`` is the line a sender must stay under: Gmail and Yahoo's
bulk-sender rules ask for a spam rate below 0.3%, and SES reviews accounts over 0.1%
complaints and 5% bounces; papermail draws the stricter common one for both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from papermail.models import BounceEvent, BounceKind, Delivery, DeliveryStatus

LIMIT = 0.003  # 0.3%
Column = InstrumentedAttribute[dt.datetime] | InstrumentedAttribute[dt.datetime | None]
DAYS = 14


@dataclass(frozen=True, slots=True)
class BounceWindow:
    """Messages sent and bounce events received in one span."""

    start: dt.datetime
    end: dt.datetime
    sent: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0

    @property
    def bounce_rate(self) -> float | None:
        return self.hard / self.sent if self.sent else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None

    @property
    def over_limit(self) -> bool:
        return any(r is not None and r >= LIMIT for r in (self.bounce_rate, self.complaint_rate))

    def describe(self) -> str:
        """E.g. "3 hard · 1 soft · 0 complaints; 1,200 sent: 0.25% bounced, 0.00% complained"."""
        counts = f"{self.hard:,} hard · {self.soft:,} soft · {self.complaints:,} complaints"
        if not self.sent:
            return f"{counts}; nothing sent"
        return (
            f"{counts}; {self.sent:,} sent: {percent(self.bounce_rate)} bounced, "
            f"{percent(self.complaint_rate)} complained"
        )


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One stored bounce or complaint, as /ops lists it."""

    received_at: dt.datetime
    kind: str
    source: str
    recipient: str
    status: str | None
    diagnostic: str | None
    delivery_id: int | None


def recent(session: Session, *, limit: int = 10) -> tuple[RecentEvent, ...]:
    """The newest events (the processor trimmed their diagnostics already)."""
    rows = session.scalars(select(BounceEvent).order_by(BounceEvent.id.desc()).limit(limit))
    return tuple(
        RecentEvent(
            received_at=e.received_at,
            kind=e.kind.value,
            source=e.source.value,
            recipient=e.recipient,
            status=e.status,
            diagnostic=e.diagnostic,
            delivery_id=e.delivery_id,
        )
        for e in rows
    )


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.2f}%"


def last_24h(session: Session, *, now: dt.datetime) -> BounceWindow:
    return spans(session, start=now - dt.timedelta(hours=24), end=now, count=1)[0]


def daily(session: Session, *, today: dt.date, days: int = DAYS) -> tuple[BounceWindow, ...]:
    """One window per UTC day, the oldest first, today (so far) last."""
    start = dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time(), tzinfo=dt.UTC)
    return spans(session, start=start, end=start + dt.timedelta(days=days), count=days)


def spans(
    session: Session, *, start: dt.datetime, end: dt.datetime, count: int
) -> tuple[BounceWindow, ...]:
    """``count`` equal windows from ``start`` to ``end``: two grouped queries in all."""
    width = (end - start) / count
    bounds = [start + width * i for i in range(count + 1)]
    sent_at = _bucket(Delivery.sent_at, bounds)
    sent = dict(
        session.execute(
            select(sent_at, func.count())
            .where(Delivery.status == DeliveryStatus.SENT, *_within(Delivery.sent_at, bounds))
            .group_by(sent_at)
        ).all()
    )
    received_at = _bucket(BounceEvent.received_at, bounds)
    events: dict[tuple[int, BounceKind], int] = {
        (i, BounceKind(kind)): n
        for i, kind, n in session.execute(
            select(received_at, BounceEvent.kind, func.count())
            .where(*_within(BounceEvent.received_at, bounds))
            .group_by(received_at, BounceEvent.kind)
        )
    }
    return tuple(
        BounceWindow(
            start=bounds[i],
            end=bounds[i + 1],
            sent=sent.get(i, 0),
            hard=events.get((i, BounceKind.HARD), 0),
            soft=events.get((i, BounceKind.SOFT), 0),
            complaints=events.get((i, BounceKind.COMPLAINT), 0),
        )
        for i in range(count)
    )


def _bucket(column: Column, bounds: list[dt.datetime]) -> ColumnElement[int]:
    """The index of the window a row falls in: a CASE over the bounds, newest first."""
    return case(*[(column >= bounds[i], i) for i in reversed(range(len(bounds) - 1))], else_=-1)


def _within(column: Column, bounds: list[dt.datetime]) -> tuple[ColumnElement[bool], ...]:
    return (column >= bounds[0], column < bounds[-1])
