"""The stages as operators run them: each opens its own sessions and journals itself.

Celery tasks and CLI commands are thin shells over these functions; every
dependency arrives as an argument.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session, sessionmaker

from papermail import editions as editions_mod
from papermail.db import session_scope
from papermail.ingest import IngestReport, ingest_papers
from papermail.jobs import recorded
from papermail.models import Edition, EditionKind
from papermail.planning import PlanReport, Publish, plan_edition, redispatch_due
from papermail.sources.base import FetchResult, RejectedItem
from papermail.sources.hf import fetch_daily

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]


def ingest_days(
    sessions: sessionmaker[Session],
    *,
    client: httpx.Client,
    base_url: str,
    days: Iterable[dt.date],
    clock: Clock,
    retries: int = 4,
) -> IngestReport:
    """Fetch every day first, then write: a failed fetch changes nothing."""
    days = list(days)
    with recorded(sessions, stage="ingest", clock=clock) as detail:
        detail["days"] = [d.isoformat() for d in days]
        results = [fetch_daily(client, day=day, base_url=base_url, retries=retries) for day in days]
        merged = FetchResult(
            papers=[p for r in results for p in r.papers],
            rejected=[x for r in results for x in r.rejected],
            pages=sum(r.pages for r in results),
        )
        return _ingest(sessions, result=merged, now=clock(), detail=detail)


def ingest_fetched(
    sessions: sessionmaker[Session], *, result: FetchResult, clock: Clock, source: str
) -> IngestReport:
    """Store papers fetched some other way (the bundled sample), journaled like an ingest."""
    with recorded(sessions, stage="ingest", clock=clock) as detail:
        detail["source"] = source
        return _ingest(sessions, result=result, now=clock(), detail=detail)


def _ingest(
    sessions: sessionmaker[Session],
    *,
    result: FetchResult,
    now: dt.datetime,
    detail: dict[str, object],
) -> IngestReport:
    report = ingest_result(sessions, result=result, now=now)
    detail.update(_ingest_detail(report))
    return report


def ingest_result(
    sessions: sessionmaker[Session], *, result: FetchResult, now: dt.datetime
) -> IngestReport:
    with session_scope(sessions) as session:
        return ingest_papers(session, result=result, now=now)


def _ingest_detail(report: IngestReport) -> dict[str, object]:
    return {
        "fetched": report.fetched,
        "inserted": report.inserted,
        "updated": report.updated,
        "rejected": len(report.rejected),
        "rejected_examples": [_rejected(r) for r in report.rejected[:5]],
    }


def _rejected(item: RejectedItem) -> str:
    return f"#{item.index} {item.paper_id or '?'}: {item.reason}"


@dataclass(frozen=True, slots=True)
class EditionSummary:
    edition_id: int | None
    day: dt.date
    kind: EditionKind
    created: bool
    papers: int


def build_edition(
    sessions: sessionmaker[Session],
    *,
    day: dt.date,
    kind: EditionKind,
    size: int,
    rank_hour: int,
    clock: Clock,
) -> EditionSummary:
    with recorded(sessions, stage="edition", clock=clock) as detail:
        with session_scope(sessions) as session:
            result = editions_mod.build_edition(
                session, day=day, kind=kind, size=size, rank_hour=rank_hour
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


def plan(
    sessions: sessionmaker[Session],
    *,
    now: dt.datetime,
    batch_size: int,
    publish: Publish,
    on_new_variants: Callable[[list[str]], None] = lambda _keys: None,
    due_only: bool = True,
    edition_ids: Iterable[int] | None = None,
    clock: Clock,
) -> list[PlanReport]:
    """Plan the latest daily and weekly editions (or the given ones).

    ``on_new_variants`` gets each chunk's new variant keys once they are committed and
    before that chunk's batches are published: the task compiles them there, once.
    """
    with recorded(sessions, stage="planning", clock=clock) as detail:
        reports = []
        with sessions() as session:
            for edition in _editions_to_plan(session, now=now, edition_ids=edition_ids):
                reports.append(
                    plan_edition(
                        session,
                        edition=edition,
                        now=now,
                        batch_size=batch_size,
                        publish=publish,
                        due_only=due_only,
                        on_new_variants=on_new_variants,
                    )
                )
        detail.update(
            editions=[r.edition_id for r in reports],
            planned=sum(r.planned for r in reports),
            not_due=sum(r.not_due for r in reports),
            variants=sum(len(r.variants) for r in reports),
            batches=sum(r.batches for r in reports),
        )
        return reports


# An edition older than this goes to nobody new: yesterday's news is fine, last week's is not.
MAX_EDITION_AGE = {
    EditionKind.DAILY: dt.timedelta(days=2),
    EditionKind.WEEKLY: dt.timedelta(days=8),
}


def _editions_to_plan(
    session: Session, *, now: dt.datetime, edition_ids: Iterable[int] | None
) -> list[Edition]:
    if edition_ids is not None:
        return [e for e in (session.get(Edition, i) for i in edition_ids) if e is not None]
    found = []
    for kind in EditionKind:
        edition = editions_mod.latest_edition(session, kind=kind, on_or_before=now.date())
        if edition is not None and now - edition.created_at <= MAX_EDITION_AGE[kind]:
            found.append(edition)
    return found


def redispatch(
    sessions: sessionmaker[Session],
    *,
    now: dt.datetime,
    batch_size: int,
    publish: Publish,
    stale_after: dt.timedelta = dt.timedelta(minutes=15),
) -> int:
    with sessions() as session:
        return redispatch_due(
            session, now=now, batch_size=batch_size, publish=publish, stale_after=stale_after
        )
