"""`papermail bench` without the developer tools: one clear line on how to get them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from papermail.cli.main import main
from papermail.config import get_settings


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("PAPERMAIL_DATABASE_URL", "PAPERMAIL_REDIS_URL", "PAPERMAIL_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAPERMAIL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("COLUMNS", "250")  # rich would wrap the line at 80
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# None in sys.modules makes the import raise ImportError, as if never installed.
@pytest.mark.parametrize(
    "missing", [("papermail_dev.bench",), ("papermail_dev", "papermail_dev.bench")]
)
def test_bench_without_the_dev_tools_says_how_to_get_them(
    isolated: None, monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...]
) -> None:
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)

    result = CliRunner().invoke(main, ["bench", "-n", "10"])

    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: papermail bench needs the developer tools")
    assert "pip install -e ./tools" in lines[0]
    assert "make bench" in lines[0]
