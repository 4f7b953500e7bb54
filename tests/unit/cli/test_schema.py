"""A fresh or outdated database: embedded creates its schema on first use; a database
behind the code gets one line saying what to run, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine

from papermail.cli.main import main
from papermail.dbadmin import head_revision, upgrade


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(
    "args",
    [
        ("subscribers", "list"),
        ("ingest", "--sample"),
        ("status",),
        ("retry-failed", "--edition", "1"),
        ("preview",),
    ],
)
def test_a_fresh_var_dir_never_gives_a_traceback(var_dir: Path, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert (var_dir / "papermail.db").is_file()


def test_status_on_a_fresh_var_dir_is_clean(var_dir: Path) -> None:
    result = run("status")
    assert result.exit_code == 0, result.output
    assert "no such table" not in result.output


def test_a_database_behind_the_code_says_to_upgrade(var_dir: Path) -> None:
    var_dir.mkdir()
    engine = create_engine(f"sqlite:///{var_dir / 'papermail.db'}")
    upgrade(engine, "0001")
    engine.dispose()
    result = run("subscribers", "list")
    assert result.exit_code == 1
    assert f"at revision 0001; this papermail needs {head_revision()}" in result.output
    assert "papermail db upgrade" in result.output
    assert run("db", "upgrade").exit_code == 0
    assert run("subscribers", "list").exit_code == 0


def test_db_current_and_a_bad_revision(var_dir: Path) -> None:
    assert "revision (none)" in run("db", "current").output
    bad = run("db", "upgrade", "--revision", "nope")
    assert bad.exit_code == 1
    assert "no migration 'nope'" in bad.output
    assert "Traceback" not in bad.output
    run("db", "upgrade")
    assert "up to date" in run("db", "current").output
