"""The /ops bounce and complaint chart: two bars a day against the 0.3% line.

Geometry only, like charts.py (whose Chart frame, bars and ticks it reuses); the markup is
templates/web/_ops_bounces.html.j2.
"""

from __future__ import annotations

from dataclasses import dataclass

from papermail.ops.bounce_rates import LIMIT, BounceWindow, RecentEvent, percent
from papermail.web.ops.charts import Bar, Chart, Tick, nice_ceiling

BASIS_POINTS = 10_000  # a rate of 0.003 is 30 basis points
MIN_TOP = 50  # basis points: the axis shows at least 0.5%, so the 0.3% line is always on it


@dataclass(frozen=True, slots=True)
class BounceChart:
    frame: Chart  # axes, ticks, the summary sentence
    bounced: tuple[Bar, ...]
    complained: tuple[Bar, ...]
    limit_y: float  # where the 0.3% line is drawn
    limit_label: str
    limit: float
    days: tuple[BounceWindow, ...]  # the figures, for the table under the chart
    recent: tuple[RecentEvent, ...] = ()  # the newest events, listed under it


def bounce_chart(
    days: tuple[BounceWindow, ...], *, recent: tuple[RecentEvent, ...] = ()
) -> BounceChart:
    frame = Chart(
        id="bounces", title="Bounce and complaint rates per day", css="bounces", summary=""
    )
    rates = [r for d in days for r in (d.bounce_rate, d.complaint_rate) if r is not None]
    top = nice_ceiling(max([MIN_TOP, *(r * BASIS_POINTS for r in rates)]))
    slot = frame.plot_w / max(1, len(days))
    bar_w = max(1.0, (slot - 4) / 2)

    def bar(i: int, rate: float | None, offset: float, what: str, day: BounceWindow) -> Bar:
        h = frame.plot_h * min(1.0, (rate or 0.0) * BASIS_POINTS / top)
        return Bar(
            x=frame.left + slot * i + 2 + offset,
            y=frame.baseline - h,
            w=bar_w,
            h=h,
            title=f"{day.start:%Y-%m-%d}: {percent(rate)} {what} ({day.sent:,} sent)",
        )

    bounced = tuple(bar(i, d.bounce_rate, 0, "bounced", d) for i, d in enumerate(days))
    complained = tuple(bar(i, d.complaint_rate, bar_w, "complained", d) for i, d in enumerate(days))
    worst = max((d for d in days if d.sent), key=_worst_rate, default=None)
    summary = f"{frame.title}, {len(days)} days, against the {percent(LIMIT)} line: " + (
        f"the worst day, {worst.start:%Y-%m-%d}, {percent(worst.bounce_rate)} bounced and "
        f"{percent(worst.complaint_rate)} complained."
        if worst
        else "nothing sent."
    )
    return BounceChart(
        frame=Chart(
            id=frame.id,
            title=frame.title,
            css=frame.css,
            summary=summary,
            y_ticks=tuple(
                Tick(at=frame.baseline - frame.plot_h * f, label=f"{top * f / 100:.2g}%")
                for f in (0, 0.5, 1)
            ),
            x_ticks=tuple(
                Tick(at=frame.left + slot * (i + 0.5), label=f"{d.start:%d %b}")
                for i, d in enumerate(days)
                if (len(days) - 1 - i) % 7 == 0  # today, a week ago, ...
            ),
        ),
        bounced=bounced,
        complained=complained,
        limit_y=frame.baseline - frame.plot_h * LIMIT * BASIS_POINTS / top,
        limit_label=percent(LIMIT),
        limit=LIMIT,
        days=days,
        recent=recent,
    )


def _worst_rate(day: BounceWindow) -> float:
    return max(day.bounce_rate or 0.0, day.complaint_rate or 0.0)
