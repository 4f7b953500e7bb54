"""Operator commands: ``papermail status``, ``pause``, ``resume``, ``retry-failed``,
``resend``, ``reingest``. Each is a thin shell over papermail.operations, exactly as
the /ops page's buttons are."""

from __future__ import annotations

import json
import time

import click
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from papermail import operations
from papermail.cli import Fail, _runtime, console, main
from papermail.monitoring import FUNNEL, Snapshot, StageRun, ago, describe_pause, describe_run
from papermail.operations import OperationRefused, OpsDesk
from papermail.runtime import utcnow
from papermail.subscriptions import InvalidEmail, find

WIDTH = 100  # the status view fits a 100-column terminal


def _desk() -> OpsDesk:
    return OpsDesk.for_runtime(_runtime())


# --- status ---------------------------------------------------------------------------------


@main.command()
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per refresh).")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes.")
def status(watch: bool, as_json: bool, interval: float) -> None:
    """Queues, workers, beat, stage runs, today's deliveries and subscribers."""
    desk = _desk()
    take = lambda: desk.snapshot(now=utcnow())  # noqa: E731
    if not watch:
        _print_once(take(), as_json=as_json)
        return
    try:
        if as_json:
            while True:
                _print_once(take(), as_json=True, indent=None)
                time.sleep(interval)
        with Live(status_view(take()), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(status_view(take()), refresh=True)
    except KeyboardInterrupt:
        pass


def _print_once(snap: Snapshot, *, as_json: bool, indent: int | None = 2) -> None:
    if as_json:
        click.echo(json.dumps(snap.as_dict(), indent=indent))
    else:
        console.print(status_view(snap), width=min(console.width, WIDTH))


def status_view(snap: Snapshot) -> RenderableType:
    parts: list[RenderableType] = [_headline(snap)]
    parts.extend(Text(f"! {_cut(e, WIDTH - 2)}", style="bold red") for e in snap.errors)
    for section in (
        _side_by_side(_queues_table(snap), _fleet_table(snap)),
        _stages_table(snap),
        _funnel_table(snap),
        _side_by_side(_rates_table(snap), _subscribers_table(snap)),
    ):
        parts.extend((Text(""), section))
    return Group(*parts)


def _headline(snap: Snapshot) -> Text:
    mode = "embedded" if snap.embedded else "production"
    line = Text.assemble(
        ("papermail ", "bold"), f"{snap.taken_at:%Y-%m-%d %H:%M:%S} UTC · {mode} · sending "
    )
    if snap.paused:
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
        workers = f"{len(snap.workers)} online: {_cut(', '.join(snap.workers), 28)}"
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
    return Text(_cut(describe_run(run), 40), style="" if run.ok else "red")


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- actions --------------------------------------------------------------------------------


@main.command()
@click.option("--reason", default="", help="Shown on the dashboard while paused.")
def pause(reason: str) -> None:
    """Pause sending: workers stop within one batch and hand unsent rows back."""
    rt = _runtime()
    if operations.pause(rt.redis, now=utcnow(), reason=reason):
        console.print("sending [bold yellow]paused[/]; `papermail resume` to continue")
    else:
        console.print("sending was already paused")


@main.command()
def resume() -> None:
    """Resume sending and queue everything that waited."""
    desk = _desk()
    with desk.runtime.sessions() as session:
        queued = operations.resume(
            desk.runtime.redis,
            session,
            now=utcnow(),
            batch_size=desk.runtime.settings.batch_size,
            publish=desk.publish,
        )
    if queued is None:
        console.print("sending was not paused")
    else:
        console.print(f"sending [bold green]resumed[/]; {queued} deliveries queued")


@main.command("retry-failed")
@click.option("--edition", "edition_id", type=int, required=True, help="Edition id.")
def retry_failed(edition_id: int) -> None:
    """Retry an edition's failed deliveries (active subscribers only)."""
    desk = _desk()
    now = utcnow()
    try:
        with desk.runtime.sessions() as session:
            count = operations.retry_failed(session, edition_id=edition_id, now=now)
    except OperationRefused as exc:
        raise Fail(str(exc)) from exc
    queued = desk.dispatch_due(now=now)
    note = "" if queued or not count else " (sending is paused: they go out on resume)"
    console.print(f"{count} failed deliveries of edition {edition_id} set to retry{note}")


@main.command()
@click.argument("email")
@click.option("--edition", "edition_id", type=int, help="Edition id; default their latest.")
def resend(email: str, edition_id: int | None) -> None:
    """Send one subscriber's digest again."""
    desk = _desk()
    try:
        with desk.runtime.sessions() as session:
            subscriber = find(session, email)
            if subscriber is None:
                raise Fail(f"no subscriber {email}")
            result = operations.resend(
                session,
                subscriber=subscriber,
                edition_id=edition_id,
                now=utcnow(),
                publish=desk.publish,
            )
    except (OperationRefused, InvalidEmail) as exc:
        raise Fail(str(exc)) from exc
    console.print(_resend_message(email, result))


def _resend_message(email: str, result: operations.ResendResult) -> str:
    if result.action == "already_queued":
        return (
            f"delivery {result.delivery_id} of edition {result.edition_id} to {email} "
            f"is already on its way ({result.previous_status})"
        )
    was = f" (was {result.previous_status})" if result.previous_status else ""
    return f"edition {result.edition_id} queued again for {email}{was}"


@main.command()
def reingest() -> None:
    """Fetch papers now (queued for a worker in production, run here when embedded)."""
    desk = _desk()
    with console.status("ingesting..."):
        result = desk.reingest()
    if result.queued:
        console.print(f"ingest queued (task {result.task_id})")
    else:
        console.print(
            f"ingested: {result.fetched} fetched, {result.inserted} new, {result.rejected} rejected"
        )
