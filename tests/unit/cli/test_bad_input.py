"""Every command answers bad input with one clear line and a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from papermail import __version__
from papermail.cli.main import main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("preview", "--subscriber", "not-an-email"), "must have an @-sign"),
        (("preview", "--edition", "99"), "no edition 99"),
        (("send", "--edition", "999"), "no edition 999"),
        (("rank", "--top", "-3"), "-3 is not in the range"),
        (("status", "--watch", "--interval", "0"), "0 is not in the range"),
        (("resend", "who@example.org"), "Missing option '--subscriber'"),  # one flag style
    ],
)
def test_bad_input_gets_one_clear_line(var_dir: Path, args: tuple[str, ...], says: str) -> None:
    result = run(*args)
    assert result.exit_code != 0
    assert says in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_reingest_offline_fails_cleanly(var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERMAIL_HF_API_BASE", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("PAPERMAIL_HTTP_RETRIES", "0")
    from papermail.config import get_settings

    get_settings.cache_clear()
    result = run("reingest")
    assert result.exit_code == 1
    assert "ingest failed, nothing was written" in result.output


def test_rank_prints_the_edition_id_that_send_takes(var_dir: Path) -> None:
    run("ingest", "--sample")
    result = run("rank", "--date", "2026-11-27")
    assert result.exit_code == 0
    assert "daily edition 1 of 2026-11-27 built" in result.output
    assert "papermail send --edition 1" in result.output


def test_version(var_dir: Path) -> None:
    assert run("--version").output.strip() == f"papermail, version {__version__}"
