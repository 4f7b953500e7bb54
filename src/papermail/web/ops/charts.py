"""The /ops charts as geometry: bars, polylines and axis ticks in SVG user units.

Pure functions of the figures (no web framework here); the SVG markup is in
templates/web/_ops_charts.html.j2 and the funnel bar's in _ops_panel.html.j2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from papermail.ops.monitoring import FUNNEL

if TYPE_CHECKING:
    from papermail.ops.history import History, Sample


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str  # the hover text: "13:00-14:00 UTC: 120"


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    points: str  # "x,y x,y ..." for <polyline>
    css: str
    latest: int


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    summary: str  # the chart in one sentence, for screen readers and the <title>
    css: str
    bars: tuple[Bar, ...] = ()
    lines: tuple[Line, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    x_ticks: tuple[Tick, ...] = ()
    width: int = 480
    height: int = 170
    left: int = 44
    top: int = 10
    bottom: int = 22
    right: int = 8

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> int:
        return self.top + self.plot_h


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power >= value:
                return step * power
        power *= 10


def _y_ticks(chart: Chart, top_value: int) -> tuple[Tick, ...]:
    return tuple(
        Tick(at=chart.baseline - chart.plot_h * f, label=f"{int(top_value * f):,}")
        for f in (0, 0.5, 1)
    )


def _hour_ticks(chart: Chart, hours: tuple[dt.datetime, ...]) -> tuple[Tick, ...]:
    slot = chart.plot_w / len(hours)
    return tuple(
        Tick(at=chart.left + slot * (i + 0.5), label=f"{h:%H}:00")
        for i, h in enumerate(hours)
        if i % 6 == len(hours) % 6  # four labels, the last on the current hour
    )


def bar_chart(
    *,
    id: str,
    title: str,
    css: str,
    unit: str,
    hours: tuple[dt.datetime, ...],
    values: tuple[int, ...],
) -> Chart:
    chart = Chart(id=id, title=title, css=css, summary="")
    top_value = nice_ceiling(max(values, default=0))
    slot = chart.plot_w / max(1, len(values))
    bars = []
    for i, (hour, value) in enumerate(zip(hours, values, strict=True)):
        h = chart.plot_h * value / top_value
        bars.append(
            Bar(
                x=chart.left + slot * i + 1,
                y=chart.baseline - h,
                w=max(1.0, slot - 2),
                h=h,
                title=f"{hour:%H}:00-{hour + dt.timedelta(hours=1):%H}:00 UTC: {value:,} {unit}",
            )
        )
    total, peak = sum(values), max(values, default=0)
    summary = f"{title}: {total:,} {unit} in 24 hours, at most {peak:,} in one hour."
    return Chart(
        id=id,
        title=title,
        css=css,
        summary=summary,
        bars=tuple(bars),
        y_ticks=_y_ticks(chart, top_value),
        x_ticks=_hour_ticks(chart, hours),
    )


def line_chart(
    *,
    id: str,
    title: str,
    hours: tuple[dt.datetime, ...],
    samples: tuple[Sample, ...],
    queues: tuple[str, ...],
) -> Chart:
    chart = Chart(id=id, title=title, css="queues", summary="")
    start, span = hours[0], dt.timedelta(hours=len(hours))
    top_value = nice_ceiling(max((max(s.queues.values(), default=0) for s in samples), default=0))
    lines = []
    for index, queue in enumerate(queues):
        points = " ".join(
            f"{chart.left + chart.plot_w * ((s.at - start) / span):.1f},"
            f"{chart.baseline - chart.plot_h * s.queues.get(queue, 0) / top_value:.1f}"
            for s in samples
        )
        latest = samples[-1].queues.get(queue, 0) if samples else 0
        lines.append(
            Line(
                name=queue.removeprefix("papermail."),
                points=points,
                css=f"series-{index}",
                latest=latest,
            )
        )
    summary = (
        f"{title}: {len(samples)} samples; now "
        + ", ".join(f"{line.name} {line.latest:,}" for line in lines)
        + "."
    )
    return Chart(
        id=id,
        title=title,
        css="queues",
        summary=summary,
        lines=tuple(lines),
        y_ticks=_y_ticks(chart, top_value),
        x_ticks=_hour_ticks(chart, hours),
    )


def charts(history: History, *, queues: tuple[str, ...]) -> tuple[Chart, ...]:
    return (
        bar_chart(
            id="sent",
            title="Sent per hour",
            css="sent",
            unit="sent",
            hours=history.hours,
            values=history.sent,
        ),
        line_chart(
            id="queues",
            title="Queue depth",
            hours=history.hours,
            samples=history.queue_samples,
            queues=queues,
        ),
        bar_chart(
            id="failed",
            title="Failures per hour",
            css="failed",
            unit="failed",
            hours=history.hours,
            values=history.failed,
        ),
    )


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    x: float
    w: float
    count: int


def funnel_bar(counts: dict[str, int], *, width: int = 1000) -> tuple[Segment, ...]:
    """Today's funnel as a stacked bar: one segment per non-empty status, in FUNNEL order."""
    total = sum(counts.values())
    segments, x = [], 0.0
    for name in FUNNEL:
        n = counts.get(name, 0)
        if n and total:
            w = width * n / total
            segments.append(Segment(name=name, x=x, w=w, count=n))
            x += w
    return tuple(segments)
