"""What every command shares: the consoles, the error type, the process's wiring and
where dispatched work goes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from papermail.config import InsecureConfiguration, Settings, describe_errors, get_settings
from papermail.dispatch import Dispatcher
from papermail.stages import InlineDispatcher
from papermail.wiring import Wiring

if TYPE_CHECKING:
    from celery import Celery

console = Console()
err = Console(stderr=True)


class Fail(click.ClickException):
    def show(self, file: IO[Any] | None = None) -> None:
        err.print(f"[bold red]error:[/] {escape(self.message)}")


def wiring(settings: Settings | None = None, *, check_schema: bool = True) -> Wiring:
    """The process's wiring; with ``check_schema`` the database must be ready for it."""
    try:
        w = Wiring(settings or get_settings())
    except InsecureConfiguration as exc:
        raise Fail(str(exc)) from exc
    except ValidationError as exc:
        raise Fail(f"bad configuration: {describe_errors(exc)}") from exc
    if check_schema:
        ready_schema(w)
    return w


def ready_schema(w: Wiring) -> None:
    """Embedded: create the schema on first use. Otherwise a schema that is missing or
    behind is an operator's decision: say what to run."""
    from sqlalchemy.exc import SQLAlchemyError

    from papermail.dbadmin import schema_state, upgrade

    try:
        state = schema_state(w.engine)
        if state.up_to_date:
            return
        if w.settings.embedded and state.current is None:
            upgrade(w.engine)
            return
    except SQLAlchemyError as exc:
        raise Fail(
            f"cannot reach the database: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    where = w.engine.url.render_as_string(hide_password=True)
    now = f"at revision {state.current}" if state.current else "empty"
    raise Fail(
        f"the database ({where}) is {now}; this papermail needs {state.head}: "
        "run `papermail db upgrade`"
    )


def parse_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date like 2026-11-26") from exc


def cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def plain(text: object) -> Text:
    """Untrusted text for a table cell: shown as typed, never read as rich markup."""
    return Text(str(text))


def celery_dispatcher(w: Wiring) -> Dispatcher:
    """Production: publish to the workers through Celery (imported only here)."""
    from workers.dispatch import celery_dispatcher as make

    return make(w.settings)


def dispatcher(w: Wiring) -> Dispatcher:
    """Where dispatched work goes: workers in production, this process when embedded."""
    return InlineDispatcher(w) if w.settings.embedded else celery_dispatcher(w)


def celery_app(w: Wiring) -> Celery | None:
    """The Celery app to watch (None when embedded: there are no workers)."""
    if w.settings.embedded:
        return None
    from workers.celery_app import make_celery

    return make_celery(w.settings)


@contextmanager
def sending(w: Wiring) -> Iterator[Dispatcher]:
    """A dispatcher for `send`-like commands: sends here with a progress bar when
    embedded, queues for workers otherwise (and says so)."""
    if not w.settings.embedded:
        yield celery_dispatcher(w)
        console.print("batches queued for workers")
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("planning and sending: {task.completed:,} emails"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("send", total=None)
    progress.start()  # at once: planning a big edition takes a while before the first batch

    def advance(count: int) -> None:
        progress.advance(task, count)

    on_batch: Callable[[int], None] = advance
    try:
        yield InlineDispatcher(w, on_batch=on_batch)
    finally:
        progress.stop()
