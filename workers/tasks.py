"""Celery tasks: open what the stage needs, call one function, map errors to retries.

Payloads are ids and dates, never ORM objects or rendered HTML. Batches are
published only after the rows they name are committed.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache

from redis import RedisError
from sqlalchemy import select

from papermail import confirmations, metrics, pipeline
from papermail.config import get_settings
from papermail.db import session_scope
from papermail.delivery.base import TransientError
from papermail.logging_setup import log_context
from papermail.models import EditionKind, Variant
from papermail.runtime import Runtime, utcnow
from papermail.sources.base import SourceError, SourceUnreachable
from papermail.variants import render_variants as render_variants_domain
from workers.celery_app import app

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """One per worker process, built lazily after the fork (engines must not cross it)."""
    return Runtime(get_settings())


def publish_batch(ids: list[int]) -> None:
    send_batch.delay(ids)


def exclusive(name: str, *, timeout: int = 1800):  # type: ignore[no-untyped-def]
    """A short-lived Redis lock: two overlapping runs of one stage would race on inserts."""
    return runtime().redis.lock(f"papermail:lock:{name}", timeout=timeout, blocking=False)


@app.task(name="papermail.ingest_papers", bind=True, max_retries=3)
def ingest_papers(self, day: str | None = None) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rt, now = runtime(), utcnow()
    days = (
        [dt.date.fromisoformat(day)]
        if day
        else [now.date() - dt.timedelta(days=n) for n in range(rt.settings.ingest_days_back)]
    )
    lock = exclusive("ingest")
    if not lock.acquire():
        log.info("another ingest is running; skipping this one")
        return {"fetched": 0, "inserted": 0, "rejected": 0}
    try:
        report = rt.ingest_days(days)
    except SourceUnreachable as exc:
        raise self.retry(exc=exc, countdown=300) from exc
    except SourceError:
        log.exception("ingest failed; nothing was written")
        raise
    finally:
        lock.release()
    return {
        "fetched": report.fetched,
        "inserted": report.inserted,
        "rejected": len(report.rejected),
    }


@app.task(name="papermail.build_edition")
def build_edition(day: str | None = None, kind: str = "daily") -> int | None:
    rt = runtime()
    summary = pipeline.build_edition(
        rt.sessions,
        day=dt.date.fromisoformat(day) if day else utcnow().date(),
        kind=EditionKind(kind),
        size=rt.settings.edition_size,
        rank_hour=rt.settings.edition_hour_utc,
        clock=utcnow,
    )
    return summary.edition_id


@app.task(name="papermail.plan_deliveries")
def plan_deliveries(due_only: bool = True) -> int:
    rt = runtime()
    lock = exclusive("planning")
    if not lock.acquire():
        log.info("another planning run is in progress; skipping this one")
        return 0
    try:
        reports = pipeline.plan(
            rt.sessions,
            now=utcnow(),
            batch_size=rt.settings.batch_size,
            publish=publish_batch,
            on_new_variants=lambda keys: compile_variants(rt, keys),
            due_only=due_only,
            clock=utcnow,
        )
    finally:
        lock.release()
    return sum(r.planned for r in reports)


def compile_variants(rt: Runtime, keys: list[str]) -> int:
    """Render once, here, before any batch needs them (a few hundred ms a day)."""
    with session_scope(rt.sessions) as session:
        return render_variants_domain(
            session,
            keys=keys,
            store=rt.store,
            env=rt.env,
            links=rt.links,
            list_name=rt.settings.list_name,
        )


@app.task(name="papermail.render_variants")
def render_variants(edition_id: int) -> int:
    """Compile every variant of an edition that Redis lacks (after a Redis flush, say)."""
    rt = runtime()
    with rt.sessions() as session:
        keys = list(session.scalars(select(Variant.key).where(Variant.edition_id == edition_id)))
    return compile_variants(rt, keys)


@app.task(name="papermail.send_batch", bind=True)
def send_batch(self, delivery_ids: list[int]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rt = runtime()
    with log_context(batch_id=self.request.id):
        report = rt.send_batch(delivery_ids, observe=metrics.observe_send)
    ship_send_metrics(rt)
    # Retries are re-queued by the redispatch sweep when due, not by a long countdown
    # (an ETA beyond the broker's visibility timeout would be delivered twice).
    return {
        "sent": report.sent,
        "retried": report.retried,
        "failed": report.failed,
        "skipped": report.skipped,
        "released": report.released,
    }


def ship_send_metrics(rt: Runtime) -> None:
    """This process's send tally to Redis, where /metrics adds up every worker's."""
    try:
        metrics.flush_send_metrics(rt.redis)
    except RedisError:
        log.warning("could not ship send metrics to Redis; kept for the next batch")


@app.task(name="papermail.redispatch")
def redispatch() -> int:
    rt = runtime()
    if rt.paused():
        return 0
    stale = dt.timedelta(seconds=rt.settings.redispatch_stale_seconds)
    return pipeline.redispatch(
        rt.sessions,
        now=utcnow(),
        batch_size=rt.settings.batch_size,
        publish=publish_batch,
        stale_after=stale,
    )


@app.task(name="papermail.send_confirmation", bind=True, max_retries=5)
def send_confirmation(self, subscriber_id: int) -> bool:  # type: ignore[no-untyped-def]
    rt = runtime()
    try:
        with session_scope(rt.sessions) as session:
            return confirmations.send_confirmation(
                session,
                subscriber_id=subscriber_id,
                env=rt.env,
                links=rt.links,
                identity=rt.identity,
                backend=rt.backend,
                now=utcnow(),
                bounce_threshold=rt.settings.bounce_threshold,
            )
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=60 * 2**self.request.retries) from exc


@app.task(name="papermail.expire_pending")
def expire_pending() -> int:
    rt = runtime()
    with session_scope(rt.sessions) as session:
        return confirmations.expire_pending(session, now=utcnow())


# --- monitoring: samples for the /ops charts, send metrics for /metrics ----------------------


@app.task(name="papermail.sample_metrics")
def sample_metrics() -> bool:
    """One point a minute for the /ops charts: queue depths and the failed-row count."""
    from papermail.monitoring import sample_now
    from workers.celery_app import PIPELINE_QUEUE, SEND_QUEUE

    rt = runtime()
    return sample_now(
        redis=rt.redis, sessions=rt.sessions, queues=(PIPELINE_QUEUE, SEND_QUEUE), now=utcnow()
    )
