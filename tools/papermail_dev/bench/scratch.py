"""The bench's world: a scratch database with the sample edition and N subscribers."""

from __future__ import annotations

import datetime as dt
import json
import random
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis as redis_lib
from pydantic import SecretStr

from papermail import stages
from papermail.config import Settings
from papermail.dbadmin import upgrade
from papermail.models import EditionKind
from papermail.sources.hf import SAMPLE_DAY, load_sample
from papermail.wiring import Wiring
from papermail_dev.bench.sink_process import SinkProcess

TOPICS = (
    "diffusion",
    "reinforcement learning",
    "video",
    "scaling law",
    "robotics",
    "agents",
    "code",
    "reasoning",
    "multimodal",
    "benchmark",
    "speech",
    "3d",
)

EDITION_SIZE = 50
RANK_HOUR = 6


SCRATCH_PREFIX = "papermail_bench"


def scratch_name(prefix: str = SCRATCH_PREFIX) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def database_url(admin_url: str, name: str) -> str:
    """The SQLAlchemy URL of database ``name`` on the admin URL's server."""
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def create_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE ``name``; returns its SQLAlchemy URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE ``name``, its open connections with it (absent is fine)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def existing_databases(admin_url: str, prefix: str = SCRATCH_PREFIX) -> list[str]:
    """The databases on the server named like a scratch database of this prefix."""
    pattern = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "\\_%"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname", (pattern,)
        ).fetchall()
    return [row[0] for row in rows]


@contextmanager
def scratch_database(admin_url: str, *, prefix: str = SCRATCH_PREFIX) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    name = scratch_name(prefix)
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


def seed_subscribers(db_url: str, *, count: int, seed: int) -> None:
    """COPY synthetic subscribers with mixed preferences (a million in seconds)."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).isoformat()
    url = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    columns = (
        "email, status, frequency, max_papers, topics, follow_organizations, "
        "follow_authors, format, timezone, send_hour, created_at, confirmed_at, "
        "bounce_count, token_version"
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
            for n in range(count):
                topics = rng.sample(TOPICS, rng.choice((0, 0, 1, 1, 2)))
                copy.write_row(
                    (
                        f"reader{n}@bench.example.org",
                        "active",
                        "daily",
                        rng.choice((5, 10, 10, 15)),
                        json.dumps(topics),
                        "[]",
                        "[]",
                        "text" if rng.random() < 0.2 else "html",
                        "UTC",
                        0,
                        now,
                        now,
                        0,
                        1,
                    )
                )
        conn.commit()
        # A live database has statistics for its subscribers; a bulk COPY leaves none.
        conn.execute("ANALYZE subscribers")


def bench_settings(db_url: str, redis_url: str, sink: SinkProcess, batch_size: int) -> Settings:
    no_env_file: dict[str, Any] = {"_env_file": None}  # the bench sets everything itself
    return Settings(
        **no_env_file,
        database_url=db_url,
        redis_url=redis_url,
        smtp_host=sink.host,
        smtp_port=sink.port,
        base_url="https://papers.bench.example.org",
        mail_from="papermail <digest@papers.bench.example.org>",
        secret_key=SecretStr(secrets.token_urlsafe(32)),
        batch_size=batch_size,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment of a Celery worker process."""
    return {
        "PAPERMAIL_DATABASE_URL": settings.database_url or "",
        "PAPERMAIL_REDIS_URL": settings.redis_url or "",
        "PAPERMAIL_SMTP_HOST": settings.smtp_host,
        "PAPERMAIL_SMTP_PORT": str(settings.smtp_port),
        "PAPERMAIL_BASE_URL": settings.base_url,
        "PAPERMAIL_MAIL_FROM": settings.mail_from,
        "PAPERMAIL_SECRET_KEY": settings.secret_key.get_secret_value(),
        "PAPERMAIL_BATCH_SIZE": str(settings.batch_size),
        "PAPERMAIL_LOG_LEVEL": "WARNING",
        "PAPERMAIL_LEDGER_ASYNC_COMMIT": "1" if settings.ledger_async_commit else "0",
        "PAPERMAIL_SEND_RATE_PER_SECOND": str(settings.send_rate_per_second),
    }


def prepare(settings: Settings, *, subscribers: int, seed: int) -> int:
    """Schema, the sample edition, N subscribers. Returns the edition id."""
    w = Wiring(settings.model_copy(update={"edition_size": EDITION_SIZE}))
    try:
        upgrade(w.engine)
        stages.store_papers(w, result=load_sample(), source="bundled sample")
        seed_subscribers(settings.effective_database_url, count=subscribers, seed=seed)
        summary = stages.build_edition(
            w, day=SAMPLE_DAY + dt.timedelta(days=1), kind=EditionKind.DAILY, rank_hour=RANK_HOUR
        )
    finally:
        w.engine.dispose()
        w.redis.close()
    assert summary.edition_id is not None
    return summary.edition_id


def flush_redis(url: str) -> None:
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    client.close()
