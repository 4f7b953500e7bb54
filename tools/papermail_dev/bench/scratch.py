"""The bench's world: a scratch database with the sample edition and N subscribers."""

from __future__ import annotations

import datetime as dt
import json
import random
import secrets
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import redis as redis_lib
from pydantic import SecretStr

from papermail import ingest_stages, stages
from papermail.config import Settings
from papermail.db import session_scope
from papermail.dbadmin import upgrade
from papermail.models import EditionKind, Paper
from papermail.sources.base import FetchResult
from papermail.sources.hf import SAMPLE_DAY, load_sample
from papermail.wiring import Wiring
from papermail_dev.bench.arxiv_pool import (
    ArxivPool,
    arxiv_papers,
    followed_fields,
    reader_categories,
)
from papermail_dev.bench.sink_process import SinkProcess
from papermail_dev.bench.typed_topics import topic_phrases

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


SUBSCRIBER_COLUMNS = (
    "email, status, frequency, max_papers, topics, follow_organizations, "
    "follow_authors, format, timezone, send_hour, created_at, confirmed_at, "
    "bounce_count, token_version"
)

# --feedback-histories: every reader has rated some papers, and set their own blend.
# "Trending vs. for me", drawn from these: the default (0.5) most often, leaning towards
# "for me" (the setting readers who click feedback move). At 0.25 trending decides most
# picks, so those readers share selections more and more as they grow in number (90%
# distinct among 1,000 of them, 75% among 40,000, about 45% among 200,000; at 0.5 and above,
# 99.5% among 40,000): with one reader in five at 0.25, a million readers had 88.1%
# distinct selections, under the 90% the mode is for; with one in ten, 90.8%.
WEIGHTS = (0.25, 0.5, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 1.0, 1.0)
MARKS = (3, 12)  # marks per reader, both included
MORE_SHARE = 0.8  # "More like this"; the rest "Less like this"
HISTORY_DAYS = 30  # marks spread over the days before the run
FEEDBACK_COLUMNS = "subscriber_id, paper_id, direction, created_at"

SubscriberRow = tuple[str, str, str, int, str, str, str, str, str, int, str, str, int, int]
FeedbackRow = tuple[int, str, str, dt.datetime]


def subscriber_rows(
    count: int, *, seed: int, now: str, topics: Sequence[str] = TOPICS
) -> Iterator[SubscriberRow]:
    """The COPY rows of ``count`` synthetic subscribers with mixed preferences, in the
    order (and so the ids) they are inserted; the same seed gives the same rows. Each
    types 0-2 of ``topics``."""
    rng = random.Random(seed)
    # Typed topics come from a stream of their own: the rest of each reader is the same
    # whichever topics they type, seed for seed.
    typing = random.Random(f"{seed}:topics")
    for n in range(count):
        typed = rng.sample(TOPICS, rng.choice((0, 0, 1, 1, 2)))
        if topics is not TOPICS:
            typed = typing.sample(topics, len(typed))
        yield (
            f"reader{n}@bench.example.org",
            "active",
            "daily",
            rng.choice((5, 10, 10, 15)),
            json.dumps(typed),
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


def relevance_weights(count: int, *, seed: int) -> Iterator[float]:
    """Each reader's "trending vs. for me" weight, from a stream of its own, so the
    subscriber rows above stay what they are without feedback histories."""
    rng = random.Random(f"{seed}:weights")
    for _ in range(count):
        yield rng.choice(WEIGHTS)


def feedback_rows(
    subscriber_ids: Iterable[int], *, papers: Sequence[str], seed: int, until: dt.datetime
) -> Iterator[FeedbackRow]:
    """The COPY rows of every reader's feedback history: MARKS[0]..MARKS[1] marks each on
    distinct papers (the table keeps one per reader and paper), mostly "more", at
    instants spread over the HISTORY_DAYS before ``until``. Deterministic for a seed."""
    if len(papers) < MARKS[1]:
        raise ValueError(f"{len(papers)} papers to rate, fewer than {MARKS[1]} marks")
    rng = random.Random(f"{seed}:feedback")
    pool = list(papers)
    span = HISTORY_DAYS * 86_400
    for subscriber_id in subscriber_ids:
        for paper_id in rng.sample(pool, rng.randint(*MARKS)):
            direction = "more" if rng.random() < MORE_SHARE else "less"
            at = until - dt.timedelta(seconds=1 + rng.randrange(span))
            yield (subscriber_id, paper_id, direction, at)


def _libpq_url(db_url: str) -> str:
    return db_url.replace("postgresql+psycopg://", "postgresql://", 1)


def seed_subscribers(
    db_url: str,
    *,
    count: int,
    seed: int,
    weights: bool = False,
    now: dt.datetime | None = None,
    fields: Sequence[str] = (),
    topics: Sequence[str] = TOPICS,
) -> None:
    """COPY synthetic subscribers with mixed preferences (a million in seconds); with
    ``weights``, each with one of WEIGHTS as their relevance weight (else the default);
    with ``fields``, each following 0-2 of those arXiv categories (else none); each typing
    0-2 of ``topics``."""
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat()
    columns = SUBSCRIBER_COLUMNS + (", relevance_weight" if weights else "")
    columns += ", arxiv_categories" if fields else ""
    rows: Iterable[tuple[object, ...]] = subscriber_rows(count, seed=seed, now=stamp, topics=topics)
    if weights:
        rows = (
            (*row, weight)
            for row, weight in zip(rows, relevance_weights(count, seed=seed), strict=True)
        )
    if fields:
        follows = reader_categories(count, seed=seed, fields=fields)
        rows = ((*row, chosen) for row, chosen in zip(rows, follows, strict=True))
    with psycopg.connect(_libpq_url(db_url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        # A live database has statistics for its subscribers; a bulk COPY leaves none.
        conn.execute("ANALYZE subscribers")


def seed_feedback(db_url: str, *, papers: Sequence[str], seed: int, until: dt.datetime) -> int:
    """COPY a feedback history for every subscriber (feedback_rows); returns the marks.

    ~7.5 rows a reader: 7.5M at a million. Each row's two foreign-key checks and three
    index entries cost PostgreSQL ~9 us (measured: 37k rows in 0.48 s, against 0.08 s
    into the same table bare), so the load runs as a restore does: the table's unique
    and foreign-key constraints and its other indexes are dropped, the rows copied, then
    all of them re-created from their own definitions, in one transaction (0.19 s).
    """
    with psycopg.connect(_libpq_url(db_url)) as conn, conn.cursor() as cur:
        first, last, count = cur.execute(
            "SELECT coalesce(min(id), 0), coalesce(max(id), -1), count(*) FROM subscribers"
        ).fetchone() or (0, -1, 0)
        ids: Iterable[int]
        if last - first + 1 == count:  # a fresh table's COPY: ids in one run, no list needed
            ids = range(first, last + 1)
        else:
            ids = [row[0] for row in cur.execute("SELECT id FROM subscribers ORDER BY id")]
        marks = 0
        with (
            _built_after_load(cur, "feedback"),
            cur.copy(f"COPY feedback ({FEEDBACK_COLUMNS}) FROM STDIN") as copy,
        ):
            for row in feedback_rows(ids, papers=papers, seed=seed, until=until):
                copy.write_row(row)
                marks += 1
        conn.commit()
        conn.execute("ANALYZE feedback")
    return marks


@contextmanager
def _built_after_load(cur: psycopg.Cursor[Any], table: str) -> Iterator[None]:
    """Drop the table's unique and foreign-key constraints and its other secondary
    indexes; re-create each from its own definition once the ``with`` body has loaded
    the rows (the foreign keys are validated then, in one pass). The caller commits."""
    constraints = cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype IN ('u', 'f') ORDER BY conname",
        (table,),
    ).fetchall()
    indexes = cur.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND NOT EXISTS"
        " (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        " ORDER BY c.relname",
        (table,),
    ).fetchall()
    for name, _ in constraints:
        cur.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f'DROP INDEX "{name}"')
    yield
    for name, definition in constraints:
        cur.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    for _name, definition in indexes:
        cur.execute(definition)


def bench_settings(
    db_url: str, redis_url: str, sink: SinkProcess | None, batch_size: int
) -> Settings:
    """The run's settings; without a sink (--plan-only) nothing is sent anywhere."""
    no_env_file: dict[str, Any] = {"_env_file": None}  # the bench sets everything itself
    smtp: dict[str, Any] = {} if sink is None else {"smtp_host": sink.host, "smtp_port": sink.port}
    return Settings(
        **no_env_file,
        **smtp,
        database_url=db_url,
        redis_url=redis_url,
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


@dataclass(frozen=True, slots=True)
class Prepared:
    edition_id: int
    pool: int  # the edition's papers: every reader's picks come from these
    feedback_marks: int  # feedback rows seeded (0 without histories)
    arxiv_papers: int = 0  # of the pool, new on arXiv (--arxiv-pool)
    typed_topics: int = 0  # distinct topics readers typed (--typed-topics; else TOPICS)


def prepare(
    settings: Settings, *, subscribers: int, seed: int, feedback_histories: bool = False
) -> int:
    """Schema, the sample edition, N subscribers. Returns the edition id."""
    return prepare_run(
        settings, subscribers=subscribers, seed=seed, feedback_histories=feedback_histories
    ).edition_id


EARLIER = dt.timedelta(days=14)
SAMPLE_MIDNIGHT = dt.datetime.combine(SAMPLE_DAY, dt.time(), tzinfo=dt.UTC)


def earlier_papers(sample: FetchResult) -> FetchResult:
    """The sample's papers as if featured two weeks earlier, under ids of their own
    (2610.xxxxx): what readers marked in earlier emails, outside today's pool."""
    papers = [
        paper.model_copy(
            update={
                "id": f"2610.{n:05d}",
                "submitted_on_daily_at": (paper.submitted_on_daily_at or SAMPLE_MIDNIGHT) - EARLIER,
                "published_at": None,
            }
        )
        for n, paper in enumerate(sample.papers, 1)
    ]
    return FetchResult(papers=papers, rejected=[], pages=1)


# The bench's papers get arXiv categories, as the arXiv ingest gives every paper in
# production (relevance reads them beside the words): a primary field by the paper's place
# in the sample, with cs.LG cross-listed, as on most Daily Papers.
BENCH_FIELDS = ("cs.CV", "cs.CL", "cs.RO", "cs.LG", "cs.AI", "cs.CR")


def describe(w: Wiring, papers: FetchResult) -> None:
    """Set the bench's categories on ``papers`` (the sample, or its earlier copies: the same
    texts in the same order get the same categories)."""
    with session_scope(w.sessions) as session:
        for n, paper in enumerate(papers.papers):
            row = session.get(Paper, paper.id)
            assert row is not None, f"paper {paper.id} was not stored"
            primary = BENCH_FIELDS[n % len(BENCH_FIELDS)]
            row.categories = [primary] if primary == "cs.LG" else [primary, "cs.LG"]


def prepare_run(
    settings: Settings,
    *,
    subscribers: int,
    seed: int,
    feedback_histories: bool = False,
    arxiv_pool: ArxivPool | None = None,
    typed_topics: int | None = None,
) -> Prepared:
    """Schema, the sample edition (every paper of its window: the Settings' edition size),
    N subscribers and, with ``feedback_histories``, their marks and blend weights; with
    ``arxiv_pool``, that many of a corpus's papers new on arXiv in the edition's window,
    and readers who follow arXiv categories; with ``typed_topics``, readers who type that
    many distinct topics between them (typed_topics.py), else TOPICS."""
    w = Wiring(settings)
    url = settings.effective_database_url
    try:
        upgrade(w.engine)
        sample = load_sample()
        ingest_stages.store_papers(w, result=sample, source="bundled sample")
        describe(w, sample)
        earlier = earlier_papers(sample)
        texts = [f"{p.title} {p.summary}" for p in sample.papers]
        fields: tuple[str, ...] = ()
        if arxiv_pool is not None:
            # Announced at the start of the sample's day: inside the edition's window.
            taken = {p.id for p in [*sample.papers, *earlier.papers]}
            arxiv = arxiv_papers(arxiv_pool, published_at=SAMPLE_MIDNIGHT, exclude=taken)
            ingest_stages.store_papers(w, result=arxiv, source="bench: new on arXiv")
            fields = followed_fields(arxiv.papers)
            texts += [f"{p.title} {p.summary}" for p in arxiv.papers]
        topics = TOPICS if typed_topics is None else topic_phrases(texts, typed_topics, seed=seed)
        now = dt.datetime.now(dt.UTC)
        marks = 0
        if feedback_histories:
            # Readers mark papers earlier emails sent them: never the edition's own (a
            # marked paper is never picked again). So the marks are on earlier papers,
            # the sample's texts under other ids, two weeks before the edition's window.
            ingest_stages.store_papers(w, result=earlier, source="bench: earlier papers")
            describe(w, earlier)
            # Readers who joined before the history that follows.
            joined = now - dt.timedelta(days=HISTORY_DAYS + 1)
            seed_subscribers(
                url,
                count=subscribers,
                seed=seed,
                weights=True,
                now=joined,
                fields=fields,
                topics=topics,
            )
            papers = [paper.id for paper in earlier.papers]
            marks = seed_feedback(url, papers=papers, seed=seed, until=now)
        else:
            seed_subscribers(url, count=subscribers, seed=seed, fields=fields, topics=topics)
        summary = stages.build_edition(
            w, day=SAMPLE_DAY + dt.timedelta(days=1), kind=EditionKind.DAILY, rank_hour=RANK_HOUR
        )
    finally:
        w.engine.dispose()
        w.redis.close()
    assert summary.edition_id is not None
    return Prepared(
        edition_id=summary.edition_id,
        pool=summary.papers,
        feedback_marks=marks,
        arxiv_papers=0 if arxiv_pool is None else arxiv_pool.papers,
        typed_topics=0 if typed_topics is None else len(topics),
    )


def flush_redis(url: str) -> None:
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    client.close()
