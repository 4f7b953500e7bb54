"""Text that subscribers or the upstream API typed is printed as typed: rich markup in it
is never interpreted (a stray "[/b]" used to crash commands with MarkupError)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import create_engine, update

from papermail.cli.main import main
from papermail.models import Paper

HOSTILE = "[/b] robots [bold red]LOUD[/] [link=https://evil.example]x[/link]"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_hostile_title_and_organisation_print_as_typed(var_dir: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    assert run("ingest", "--sample").exit_code == 0
    engine = create_engine(f"sqlite:///{var_dir / 'papermail.db'}")
    with engine.begin() as connection:
        connection.execute(update(Paper).values(title=HOSTILE[:50], organization="[/]"))
    engine.dispose()
    result = run("rank", "--date", "2026-11-27", "--top", "3")
    assert result.exit_code == 0, result.output
    assert "[/b] robots [bold red]LOUD" in result.output


def test_an_error_message_with_markup_prints_as_typed(var_dir: Path) -> None:
    result = CliRunner().invoke(main, ["rank", "--date", "[/b]"])
    assert result.exit_code != 0
    assert "MarkupError" not in repr(result.exception)
