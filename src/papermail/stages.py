"""The stage API: what the shells (Celery tasks, the CLI, the web app) call.

Each function takes the process's Wiring, opens the sessions it needs, journals
itself where operators watch it (``job_runs``), and calls one domain function with
every dependency as an argument. Nothing here knows Celery: work that runs later
goes through a ``Dispatcher`` (papermail.dispatch) that the caller passes in.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from papermail.clock import Clock, utcnow
from papermail.db import session_scope
from papermail.dispatch import QUEUES, Dispatcher
from papermail.ingest_stages import default_ingest_days, ingest
from papermail.models import Edition, EditionKind
from papermail.ops.jobs import recorded
from papermail.ops.monitoring import REDBEAT_LOCK_TIMEOUT, CeleryLike, Snapshot, take_snapshot
from papermail.pipeline import editions
from papermail.pipeline.planning import PlanReport, plan_edition
from papermail.pipeline.redispatch import redispatch_due
from papermail.pipeline.sending import BatchReport, Observe
from papermail.pipeline.sending import send_batch as send_rows
from papermail.pipeline.variants import render_once
from papermail.subscribers.confirmations import send_confirmation as mail_confirmation
from papermail.wiring import Wiring

log = logging.getLogger(__name__)

# An edition older than this goes to nobody new: yesterday's news is fine, last week's is not.
MAX_EDITION_AGE = {
    EditionKind.DAILY: dt.timedelta(days=2),
    EditionKind.WEEKLY: dt.timedelta(days=8),
}


# --- editions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditionSummary:
    edition_id: int | None
    day: dt.date
    kind: EditionKind
    created: bool
    papers: int


def build_edition(
    w: Wiring,
    *,
    day: dt.date,
    kind: EditionKind,
    rank_hour: int | None = None,
    clock: Clock = utcnow,
) -> EditionSummary:
    """Rank the day's papers into an edition (idempotent: a second call finds the first)."""
    hour = w.settings.edition_hour_utc if rank_hour is None else rank_hour
    with recorded(w.sessions, stage="edition", clock=clock) as detail:
        with session_scope(w.sessions) as session:
            result = editions.build_edition(
                session, day=day, kind=kind, size=w.settings.edition_size, rank_hour=hour
            )
            edition = result.edition
            summary = EditionSummary(
                edition_id=edition.id if edition else None,
                day=day,
                kind=kind,
                created=result.created,
                papers=len(edition.items) if edition else 0,
            )
        detail.update(
            day=day.isoformat(),
            kind=kind.value,
            edition_id=summary.edition_id,
            created=summary.created,
            papers=summary.papers,
        )
        return summary


# --- planning and rendering -----------------------------------------------------------------


def plan(
    w: Wiring,
    *,
    dispatcher: Dispatcher,
    now: dt.datetime,
    due_only: bool = True,
    edition_ids: Iterable[int] | None = None,
    clock: Clock = utcnow,
) -> list[PlanReport]:
    """Plan the latest daily and weekly editions (or the given ones) and publish batches.

    Each chunk's new variants are compiled once they are committed and before that
    chunk's batches are published, so no worker renders MJML.
    """
    with recorded(w.sessions, stage="planning", clock=clock) as detail:
        reports = []
        with w.sessions() as session:
            for edition in _editions_to_plan(session, now=now, edition_ids=edition_ids):
                reports.append(
                    plan_edition(
                        session,
                        edition=edition,
                        now=now,
                        batch_size=w.settings.batch_size,
                        publish=dispatcher.send_batch,
                        due_only=due_only,
                        prepare=functools.partial(compile_edition, w, edition.id),
                    )
                )
        detail.update(
            editions=[r.edition_id for r in reports],
            planned=sum(r.planned for r in reports),
            not_due=sum(r.not_due for r in reports),
            variants=sum(r.variants for r in reports),
            batches=sum(r.batches for r in reports),
        )
        return reports


def _editions_to_plan(
    session: Session, *, now: dt.datetime, edition_ids: Iterable[int] | None
) -> list[Edition]:
    if edition_ids is not None:
        return [e for e in (session.get(Edition, i) for i in edition_ids) if e is not None]
    found = []
    for kind in EditionKind:
        edition = editions.latest_edition(session, kind=kind, on_or_before=now.date())
        if edition is not None and now - edition.created_at <= MAX_EDITION_AGE[kind]:
            found.append(edition)
    return found


def compile_edition(w: Wiring, edition_id: int) -> int:
    """Render the edition into Redis unless it is there (planning does it before the
    first batch; after a Redis flush, workers would each render it otherwise)."""
    with session_scope(w.sessions) as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise LookupError(f"no edition {edition_id}")
        return int(
            render_once(
                session,
                edition=edition,
                store=w.store,
                env=w.env,
                links=w.links,
                list_name=w.settings.list_name,
            )
        )


# --- sending --------------------------------------------------------------------------------


def send_batch(
    w: Wiring, delivery_ids: Sequence[int], *, observe: Observe | None = None
) -> BatchReport:
    """One send batch with this process's backend, templates and limiter."""
    with w.sessions() as session:
        return send_rows(
            session,
            delivery_ids=delivery_ids,
            backend=w.backend,
            templates=w.templates(),
            limiter=w.limiter,
            links=w.links,
            identity=w.identity,
            policy=w.send_policy,
            clock=utcnow,
            paused=w.paused,
            observe=observe or (lambda _outcome, _seconds: None),
            sign=w.dkim,
        )


def redispatch(
    w: Wiring,
    *,
    dispatcher: Dispatcher,
    now: dt.datetime,
    stale_after: dt.timedelta | None = None,
) -> int:
    """Queue rows that are due (retries, stale dispatches), unless sending is paused."""
    if w.paused():
        return 0
    stale = (
        dt.timedelta(seconds=w.settings.redispatch_stale_seconds)
        if stale_after is None
        else stale_after
    )
    with w.sessions() as session:
        return redispatch_due(
            session,
            now=now,
            batch_size=w.settings.batch_size,
            publish=dispatcher.send_batch,
            stale_after=stale,
        )


def send_confirmation(w: Wiring, subscriber_id: int, *, clock: Clock = utcnow) -> bool:
    """Mail a pending subscriber their confirmation link. TransientError propagates."""
    with session_scope(w.sessions) as session:
        return mail_confirmation(
            session,
            subscriber_id=subscriber_id,
            env=w.env,
            links=w.links,
            identity=w.identity,
            backend=w.backend,
            now=clock(),
            bounce_threshold=w.settings.bounce_threshold,
            sign=w.dkim,
        )


# --- running it right here ------------------------------------------------------------------


@dataclass
class InlineDispatcher:
    """Runs dispatched work at once, in this process: embedded mode, the demo, tests.

    ``on_batch`` hears each batch's size after it is sent (the CLI's progress bar).
    """

    wiring: Wiring
    clock: Clock = utcnow
    on_batch: Callable[[int], None] = lambda _count: None
    queued: bool = False

    def send_batch(self, delivery_ids: list[int]) -> None:
        send_batch(self.wiring, delivery_ids)
        self.on_batch(len(delivery_ids))

    def send_confirmation(self, subscriber_id: int) -> None:
        send_confirmation(self.wiring, subscriber_id, clock=self.clock)

    def ingest(self) -> str | None:
        ingest(self.wiring, days=default_ingest_days(self.wiring, today=self.clock().date()))
        return None


# --- watching -------------------------------------------------------------------------------


def snapshot(
    w: Wiring, *, celery: CeleryLike | None, now: dt.datetime, worker_timeout: float = 1.0
) -> Snapshot:
    """Everything `papermail status`, /ops and /metrics show; ``celery`` None when embedded."""
    return take_snapshot(
        sessions=w.sessions,
        redis=w.redis,
        celery=celery,
        queues=QUEUES,
        now=now,
        embedded=w.settings.embedded,
        worker_timeout=worker_timeout,
        beat_lock_timeout=REDBEAT_LOCK_TIMEOUT,
    )
