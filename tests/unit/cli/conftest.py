"""The `papermail` command in a throwaway directory with embedded settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from papermail.config import get_settings


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    var = tmp_path / "var"
    monkeypatch.chdir(tmp_path)  # no stray .env, and anything relative lands here
    for name in (
        "PAPERMAIL_DATABASE_URL",
        "PAPERMAIL_REDIS_URL",
        "PAPERMAIL_MAIL_BACKEND",
        "PAPERMAIL_OUTBOX_DIR",
        "PAPERMAIL_ENVIRONMENT",
        "PAPERMAIL_TEMPLATES_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAPERMAIL_VAR_DIR", str(var))
    monkeypatch.setenv("PAPERMAIL_BASE_URL", "https://papers.example.org")
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables and paths to the width
    get_settings.cache_clear()
    yield var
    get_settings.cache_clear()
