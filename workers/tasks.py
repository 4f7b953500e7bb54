"""Celery tasks: build the process's wiring, call one stage, map errors to retries.

Payloads are ids and dates, never ORM objects or rendered HTML. Batches are
published only after the rows they name are committed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from celery import Task
from redis import RedisError

from papermail import bounce_stages, gc_tuning, ingest_stages, stages
from papermail.clock import utcnow
from papermail.config import get_settings
from papermail.db import session_scope
from papermail.delivery.base import TransientError
from papermail.dispatch import QUEUES
from papermail.logging_setup import log_context
from papermail.models import EditionKind
from papermail.ops.history import sample_now
from papermail.ops.send_tally import SendTally
from papermail.sources.base import SourceError, SourceUnreachable
from papermail.subscribers.confirmations import expire_pending as expire_signups
from papermail.wiring import Wiring
from workers.celery_app import app
from workers.dispatch import CeleryDispatcher

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def wiring() -> Wiring:
    """One per worker process, built lazily after the fork (engines must not cross it)."""
    return Wiring(get_settings())


def dispatcher() -> CeleryDispatcher:
    return CeleryDispatcher(app)


@contextmanager
def exclusive(name: str, *, timeout: int = 1800) -> Iterator[bool]:
    """A short-lived Redis lock: two overlapping runs of one stage would race on inserts."""
    lock = wiring().redis.lock(f"papermail:lock:{name}", timeout=timeout, blocking=False)
    acquired = bool(lock.acquire())
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()


@app.task(name="papermail.ingest_papers", bind=True, max_retries=3)
def ingest_papers(self: Task, day: str | None = None) -> dict[str, int]:
    w, today = wiring(), utcnow().date()
    days = (
        [dt.date.fromisoformat(day)] if day else ingest_stages.default_ingest_days(w, today=today)
    )
    with exclusive("ingest") as mine:
        if not mine:
            log.info("another ingest is running; skipping this one")
            return {"fetched": 0, "inserted": 0, "rejected": 0}
        try:
            report = ingest_stages.ingest(w, days=days)
        except SourceUnreachable as exc:
            raise self.retry(exc=exc, countdown=300) from exc
        except SourceError:
            log.exception("ingest failed; nothing was written")
            raise
    return {
        "fetched": report.fetched,
        "inserted": report.inserted,
        "rejected": len(report.rejected),
    }


@app.task(name="papermail.ingest_arxiv", bind=True, max_retries=3)
def ingest_arxiv(self: Task, day: str | None = None) -> dict[str, int]:
    """Once a day after arXiv's announcement; shares the ingest lock (one paper, one row)."""
    days = (
        [dt.date.fromisoformat(day)]
        if day
        else ingest_stages.default_arxiv_days(today=utcnow().date())
    )
    with exclusive("ingest") as mine:
        if not mine:  # the half-hourly HF ingest is running: come back once it is done
            raise self.retry(countdown=120)
        try:
            report = ingest_stages.ingest_arxiv(wiring(), days=days)
        except SourceUnreachable as exc:  # network, or arXiv asking us to slow down
            raise self.retry(exc=exc, countdown=600) from exc
        except SourceError:
            log.exception("arXiv ingest failed; nothing was written")
            raise
    return {
        "fetched": report.fetched,
        "inserted": report.inserted,
        "rejected": len(report.rejected),
    }


@app.task(name="papermail.build_edition")
def build_edition(day: str | None = None, kind: str = "daily") -> int | None:
    chosen = dt.date.fromisoformat(day) if day else utcnow().date()
    return stages.build_edition(wiring(), day=chosen, kind=EditionKind(kind)).edition_id


@app.task(name="papermail.plan_deliveries")
def plan_deliveries(due_only: bool = True) -> int:
    with exclusive("planning") as mine:
        if not mine:
            log.info("another planning run is in progress; skipping this one")
            return 0
        reports = stages.plan(wiring(), dispatcher=dispatcher(), now=utcnow(), due_only=due_only)
    return sum(r.planned for r in reports)


@app.task(name="papermail.render_variants")
def render_variants(edition_id: int) -> int:
    return stages.compile_edition(wiring(), edition_id)


@app.task(name="papermail.send_batch", bind=True)
def send_batch(self: Task, delivery_ids: list[int]) -> dict[str, int]:
    # Retries are re-queued by the redispatch sweep when due, not by a long countdown
    # (an ETA beyond the broker's visibility timeout would be delivered twice).
    with log_context(batch_id=self.request.id):
        report = stages.send_batch(wiring(), delivery_ids, observe=send_tally().observe)
    ship_send_metrics()
    gc_tuning.after_batch()  # the batch's reference cycles, now: see papermail/gc_tuning.py
    return report.as_dict()


@lru_cache(maxsize=1)
def send_tally() -> SendTally:
    """This process's send counts since the last flush (one per worker process)."""
    return SendTally()


def ship_send_metrics() -> None:
    """This process's send tally to Redis, where /metrics adds up every worker's."""
    try:
        send_tally().flush(wiring().redis)
    except RedisError:
        log.warning("could not ship send metrics to Redis; kept for the next batch")


@app.task(name="papermail.redispatch")
def redispatch() -> int:
    return stages.redispatch(wiring(), dispatcher=dispatcher(), now=utcnow())


@app.task(name="papermail.send_confirmation", bind=True, max_retries=5)
def send_confirmation(self: Task, subscriber_id: int) -> bool:
    try:
        return stages.send_confirmation(wiring(), subscriber_id)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=60 * 2**self.request.retries) from exc


@app.task(name="papermail.expire_pending")
def expire_pending() -> int:
    with session_scope(wiring().sessions) as session:
        return expire_signups(session, now=utcnow())


@app.task(name="papermail.poll_bounces")
def poll_bounces() -> dict[str, int]:
    """Read the bounce mailbox into the bounce processor (scheduled when one is configured)."""
    with exclusive("poll-bounces", timeout=900) as mine:
        report = bounce_stages.poll_bounces(wiring()) if mine else None
    return report.as_dict() if report else {}


@app.task(name="papermail.sample_metrics")
def sample_metrics() -> bool:
    """One point a minute for the /ops charts: queue depths and the failed-row count."""
    w = wiring()
    return sample_now(redis=w.redis, sessions=w.sessions, queues=QUEUES, now=utcnow())
