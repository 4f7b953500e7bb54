"""``papermail status``: queues, workers, beat, stage runs, sources, deliveries, subscribers."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from papermail import stages
from papermail.cli.common import celery_app, console, cut, plain, wiring
from papermail.clock import utcnow
from papermail.ops.bounce_rates import LIMIT, BounceWindow, percent
from papermail.ops.monitoring import FUNNEL, Snapshot, StageRun
from papermail.ops.phrasing import ago, describe_pause, describe_run
from papermail.ops.sources import SourceHealth, read_source_health, span

WIDTH = 100  # the status view fits a 100-column terminal

# The snapshot and each source's health (None: the database did not answer).
View = tuple[Snapshot, Sequence[SourceHealth] | None]


@click.command()
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per refresh).")
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds between refreshes.",
)
def status(watch: bool, as_json: bool, interval: float) -> None:
    """Queues, workers, beat, stage runs, sources, today's deliveries and subscribers."""
    w = wiring()
    app = celery_app(w)

    def take() -> View:
        snap = stages.snapshot(w, celery=app, now=utcnow())
        # While the snapshot could not read the database, don't wait on it a second time.
        up = snap.source_up("database")
        return snap, read_source_health(w.sessions, now=snap.taken_at) if up else None

    if not watch:
        _print_once(take(), as_json=as_json)
        return
    try:
        if as_json:
            while True:
                _print_once(take(), as_json=True, indent=None)
                time.sleep(interval)
        with Live(status_view(*take()), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(status_view(*take()), refresh=True)
    except KeyboardInterrupt:
        pass


def _print_once(view: View, *, as_json: bool, indent: int | None = 2) -> None:
    snap, sources = view
    if as_json:
        data: dict[str, Any] = snap.as_dict()
        data["sources"] = None if sources is None else [s.as_dict() for s in sources]
        click.echo(json.dumps(data, indent=indent))
    else:
        console.print(status_view(snap, sources), width=min(console.width, WIDTH))


def status_view(snap: Snapshot, sources: Sequence[SourceHealth] | None = ()) -> RenderableType:
    """The whole view; ``sources`` None says the database gave no figures, empty leaves
    the section out."""
    parts: list[RenderableType] = [_headline(snap)]
    parts.extend(Text(f"! {cut(e, WIDTH - 2)}", style="bold red") for e in snap.errors)
    for section in (
        _side_by_side(_queues_table(snap), _fleet_table(snap)),
        _stages_table(snap),
        _sources_section(sources, now=snap.taken_at) if sources is None or sources else None,
        _funnel_table(snap),
        _side_by_side(_rates_table(snap), _subscribers_table(snap)),
    ):
        if section is not None:
            parts.extend((Text(""), section))
    if snap.bounces_24h is not None:
        parts.append(_bounces_line(snap.bounces_24h))
    return Group(*parts)


def _headline(snap: Snapshot) -> Text:
    mode = "embedded" if snap.embedded else "production"
    line = Text.assemble(
        ("papermail ", "bold"), f"{snap.taken_at:%Y-%m-%d %H:%M:%S} UTC · {mode} · sending "
    )
    if snap.embedded:
        line.append("inline, when a command sends (no workers)", style="bold")
    elif snap.paused:
        line.append(f"PAUSED {describe_pause(snap.paused, snap.taken_at)}", style="bold yellow")
    else:
        line.append("running", style="bold green")
    return line


def _table(title: str, *columns: str, numeric: tuple[str, ...] = ()) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        header_style="dim",
    )
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")
    return table


def _side_by_side(left: Table, right: Table) -> Table:
    grid = Table.grid(padding=(0, 4))
    grid.add_row(left, right)
    return grid


def _queues_table(snap: Snapshot) -> Table:
    table = _table("Queues", "queue", "ready", "reserved", numeric=("ready", "reserved"))
    for q in snap.queues:
        table.add_row(q.name, f"{q.ready:,}", f"{q.unacked:,}")
    if not snap.queues:
        table.add_row("[red]no broker figures[/]", "-", "-")
    return table


def _fleet_table(snap: Snapshot) -> Table:
    table = _table("Workers and beat", "", "")
    table.show_header = False
    if snap.workers is None:
        workers = "inline (embedded)" if snap.embedded else "[red]no answer[/]"
    elif not snap.workers:
        workers = "[bold red]none online[/]"
    else:
        workers = escape(f"{len(snap.workers)} online: {cut(', '.join(snap.workers), 28)}")
    table.add_row("workers", workers)
    beat = snap.beat
    if snap.embedded:
        tick = "not used (embedded)"
    elif beat is None or not beat.lock_held:
        tick = "[bold red]not running[/] (no RedBeat lock)"
    else:
        tick = f"ticked {ago(beat.last_tick, snap.taken_at)}"
    table.add_row("beat", tick)
    if beat is not None and beat.last_dispatch is not None:
        table.add_row("last task", f"sent {ago(beat.last_dispatch, snap.taken_at)}")
    return table


def _stages_table(snap: Snapshot) -> Table:
    table = _table("Pipeline", "stage", "last run", "took", "result", "last OK", numeric=("took",))
    for run in snap.runs:
        table.add_row(
            run.stage,
            ago(run.started_at, snap.taken_at),
            _seconds(run.duration_seconds),
            _result(run),
            ago(run.last_success_at, snap.taken_at),
        )
    return table


def _sources_section(sources: Sequence[SourceHealth] | None, *, now: dt.datetime) -> Group:
    """A row per source, then each alert in red and each last error as typed (upstream
    text: never read as markup)."""
    numeric = ("accepted", "rejected", "lag")
    table = _table("Sources", "source", "last fetch", "result", *numeric, numeric=numeric)
    notes: list[RenderableType] = []
    if sources is None:
        table.add_row(Text("no figures (database)", style="red"), "-", "-", "-", "-", "-")
    for s in sources or ():
        when = s.last_attempt_at
        table.add_row(
            plain(s.source),
            f"{ago(when, now)} ({when:%Y-%m-%d %H:%M} UTC)" if when else "never fetched",
            _source_result(s),
            _figure(s.accepted),
            Text(_figure(s.rejected), style="yellow" if s.rejected else ""),
            Text(span(s.lag), style="red" if s.alert else ""),
        )
        if s.alert:
            notes.append(Text(cut(f"! {s.source}: {s.alert}", WIDTH), style="bold red"))
        if s.last_error:
            error = cut(f"{s.source} last error: {s.last_error}", WIDTH - 2)
            notes.append(Text(f"  {error}", style="red" if s.alert else "yellow"))
    return Group(table, *notes)


def _source_result(s: SourceHealth) -> Text:
    """The last attempt's outcome; red while the source is alerted on."""
    if s.last_attempt_at is None:
        return Text("-", style="dim")
    word, style = {None: ("running", "yellow"), True: ("ok", "green")}.get(
        s.last_attempt_ok, ("failed", "yellow")
    )
    return Text(word, style="bold red" if s.alert else style)


def _figure(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _funnel_table(snap: Snapshot) -> Table:
    table = _table(
        "Today's deliveries (planned today, UTC)", *FUNNEL, "total", numeric=(*FUNNEL, "total")
    )
    styles = {"failed": "red", "retry": "yellow", "sent": "green", "suppressed": "magenta"}
    table.add_row(
        *(Text(f"{snap.funnel.get(k, 0):,}", style=styles.get(k, "")) for k in FUNNEL),
        f"{sum(snap.funnel.values()):,}",
    )
    return table


def _rates_table(snap: Snapshot) -> Table:
    columns = ("5 min", "60 min", "bounces", "backlog")
    table = _table("Sending (per minute)", *columns, numeric=columns)
    table.add_row(
        f"{snap.send_rate_5m:,.1f}",
        f"{snap.send_rate_60m:,.1f}",
        Text(f"{snap.bounces_today:,}", style="red" if snap.bounces_today else ""),
        f"{sum(snap.backlog.values()):,}",
    )
    return table


def _subscribers_table(snap: Snapshot) -> Table:
    table = _table("Subscribers", *snap.subscribers, numeric=tuple(snap.subscribers))
    table.add_row(*(f"{n:,}" for n in snap.subscribers.values()))
    return table


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.0f}m"


def _result(run: StageRun) -> Text:
    if run.ok is None:
        return Text("running" if run.started_at else "-", style="yellow")
    return Text(cut(describe_run(run), 40), style="" if run.ok else "red")


def _bounces_line(window: BounceWindow) -> Text:
    """Bounces and complaints over the last 24 hours, red at or over the 0.3% line."""
    line = f"Bounces, last 24 h: {window.describe()} (line: {percent(LIMIT)})"
    return Text(line, style="bold red" if window.over_limit else "")
