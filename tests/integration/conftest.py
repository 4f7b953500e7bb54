"""Fixtures over the real services. Missing services skip locally and fail in CI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from papermail.config import Settings
from papermail.db import make_engine
from papermail.dbadmin import upgrade
from papermail.wiring import Wiring
from papermail_dev.smtpsink import SmtpSink
from tests.conftest import service_missing
from tests.support.services import (
    REDIS_BASE,
    FakeHuggingFace,
    pg_available,
    redis_available,
    temporary_database,
)

pytestmark = pytest.mark.integration
REDIS_DB = 11  # papermail's integration tests own this Redis database


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    if not pg_available():
        service_missing("PostgreSQL at 127.0.0.1:5432")
    with temporary_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


def flushed_redis(db: int) -> Iterator[str]:
    """A Redis database of the test's own, empty before and after (for a fixture to yield from)."""
    if not redis_available():
        service_missing("Redis at 127.0.0.1:6379")
    url = f"{REDIS_BASE}/{db}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield from flushed_redis(REDIS_DB)


BENCH_REDIS_DB = 9  # the bench tests' Redis database (they run one after another)


@pytest.fixture
def bench_redis_url() -> Iterator[str]:
    """Redis and PostgreSQL for a bench test: the bench creates its own scratch database."""
    if not pg_available():
        service_missing("PostgreSQL at 127.0.0.1:5432")
    yield from flushed_redis(BENCH_REDIS_DB)


@pytest.fixture
def clean_db(pg_url: str) -> str:
    """The session's database with every table emptied (schema kept)."""
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE deliveries, variants, edition_items, editions, paper_snapshots, papers, "
            "subscribers, job_runs RESTART IDENTITY CASCADE"
        )
    engine.dispose()
    return pg_url


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture
def fake_hf() -> Iterator[FakeHuggingFace]:
    yesterday = lambda: dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # noqa: E731
    with FakeHuggingFace(yesterday) as fake:
        yield fake


@pytest.fixture
def service_env(
    clean_db: str, redis_url: str, sink: SmtpSink, fake_hf: FakeHuggingFace, tmp_path: Path
) -> dict[str, str]:
    """The environment a production deployment would set, pointing at the test services."""
    return {
        "PAPERMAIL_DATABASE_URL": clean_db,
        "PAPERMAIL_REDIS_URL": redis_url,
        "PAPERMAIL_SMTP_HOST": sink.host,
        "PAPERMAIL_SMTP_PORT": str(sink.port),
        "PAPERMAIL_HF_API_BASE": fake_hf.base_url,
        "PAPERMAIL_BASE_URL": "https://papers.example.org",
        "PAPERMAIL_MAIL_FROM": "papermail <digest@papers.example.org>",
        "PAPERMAIL_SECRET_KEY": "integration-secret-key-0123456789abcdef",
        "PAPERMAIL_VAR_DIR": str(tmp_path / "var"),
        "PAPERMAIL_HTTP_RETRIES": "1",
    }


@pytest.fixture
def runtime(service_env: dict[str, str]) -> Wiring:
    """The same configuration, in the test process (to seed data and read results)."""
    fields = {key.removeprefix("PAPERMAIL_").lower(): value for key, value in service_env.items()}
    return Wiring(Settings(_env_file=None, **fields))
