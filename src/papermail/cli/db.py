"""``papermail db``: the database schema (Alembic migrations)."""

from __future__ import annotations

import click
from rich.markup import escape

from papermail.cli.common import Fail, console, wiring


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema."""
    from papermail.dbadmin import UnknownRevision, current_revision, upgrade_to

    w = wiring(check_schema=False)
    try:
        upgrade_to(w.engine, revision)
    except UnknownRevision as exc:
        raise Fail(str(exc)) from exc
    console.print(
        f"database at revision [bold]{current_revision(w.engine)}[/] "
        f"({escape(w.engine.url.render_as_string(hide_password=True))})"
    )


@db.command("current")
def db_current() -> None:
    """Show the database's schema revision and the one this papermail needs."""
    from papermail.dbadmin import schema_state

    w = wiring(check_schema=False)
    state = schema_state(w.engine)
    where = escape(w.engine.url.render_as_string(hide_password=True))
    verdict = "up to date" if state.up_to_date else "behind: run `papermail db upgrade`"
    console.print(
        f"database {where}: revision {state.current or '(none)'}; needs {state.head} ({verdict})"
    )
