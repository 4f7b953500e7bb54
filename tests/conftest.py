"""Shared fixtures: SQLite + fakeredis for unit tests; real services behind markers."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from sqlalchemy.orm import Session

from papermail.config import Settings
from papermail.db import make_engine, make_session_factory
from papermail.models import Base
from papermail.subscribers.tokens import Links, TokenSigner

FIXTURES = Path(__file__).parent / "fixtures"
REQUIRE_SERVICES = os.environ.get("PAPERMAIL_REQUIRE_SERVICES") == "1"
FIXED_NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def service_missing(what: str) -> None:
    """Skip when a service is absent locally; fail under PAPERMAIL_REQUIRE_SERVICES=1 (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is not available and PAPERMAIL_REQUIRE_SERVICES=1")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        var_dir=tmp_path / "var",
        base_url="https://papers.example.org",
        mail_from="papermail <digest@papers.example.org>",
        secret_key="test-secret-key-that-is-long-enough-0123456789",
    )


@pytest.fixture
def session_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def session(session_factory) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        yield s


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def links(settings: Settings) -> Links:
    return Links(settings.base_url, TokenSigner(settings.secret_key.get_secret_value()))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Say up front (even under -q) what the service tests write to, before they do."""
    from tests.support.services import PG_ADMIN_URL, REDIS_BASE

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and any(
        "integration" in a or a == "tests" for a in session.config.args
    ):
        reporter.write_line(
            f"warning: the integration tests FLUSH Redis databases 9 and 11-14 at {REDIS_BASE} "
            "(PAPERMAIL_TEST_REDIS) and create and drop scratch databases papermail_* through "
            f"{PG_ADMIN_URL} (PAPERMAIL_TEST_PG): point them at servers you can spare",
            yellow=True,
        )
