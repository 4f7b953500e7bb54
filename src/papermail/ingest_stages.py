"""The stage API for ingest: fetch from Hugging Face and arXiv, then write, journaled as
stage "ingest". Like stages.py, it takes the process's Wiring and knows nothing of its
callers (Celery tasks, the CLI, the web app).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

from papermail.clock import Clock, utcnow
from papermail.db import session_scope
from papermail.ops.jobs import recorded
from papermail.pipeline.ingest import (
    IngestReport,
    categories_to_fetch,
    ingest_papers,
    undescribed_featured,
)
from papermail.sources import arxiv, arxiv_lookup
from papermail.sources.base import FetchResult, RejectedItem, SourceError, clean_line
from papermail.sources.hf import fetch_daily
from papermail.sources.http import Budget
from papermail.wiring import Wiring

log = logging.getLogger(__name__)

# Featured papers a run asks arXiv to describe by id: 5 requests of 100. Hugging Face
# features ~50 a day, so this covers a backlog (the first run, or days arXiv was down).
MAX_DESCRIBED = 500


def default_ingest_days(w: Wiring, *, today: dt.date) -> list[dt.date]:
    return [today - dt.timedelta(days=n) for n in range(w.settings.ingest_days_back)]


def ingest(w: Wiring, *, days: Iterable[dt.date], clock: Clock = utcnow) -> IngestReport:
    """Fetch every day from the API first, then write: a failed fetch changes nothing."""
    days = list(days)
    with recorded(w.sessions, stage="ingest", clock=clock) as detail:
        detail.update(source="hf", days=[d.isoformat() for d in days])
        with w.http_client() as client:
            results = [
                fetch_daily(
                    client,
                    day=day,
                    base_url=w.settings.hf_api_base,
                    retries=w.settings.http_retries,
                )
                for day in days
            ]
        merged = FetchResult(
            papers=[p for r in results for p in r.papers],
            rejected=[x for r in results for x in r.rejected],
            pages=sum(r.pages for r in results),
        )
        return _store(w, result=merged, now=clock(), detail=detail)


ARXIV_DAYS_BACK = 4  # today and the three days before: Monday's run reaches back to Friday


def default_arxiv_days(*, today: dt.date) -> list[dt.date]:
    """The days a scheduled arXiv ingest covers; re-fetching a day only updates its rows."""
    return [today - dt.timedelta(days=n) for n in range(ARXIV_DAYS_BACK)]


def ingest_arxiv(
    w: Wiring,
    *,
    days: Iterable[dt.date],
    categories: Sequence[str] | None = None,
    clock: Clock = utcnow,
    sleep: Callable[[float], None] | None = None,
) -> IngestReport:
    """Fetch the days' new arXiv submissions (default: the categories active readers follow
    and PAPERMAIL_ARXIV_CATEGORIES), then arXiv's description (categories, comment, journal
    ref) of the papers Hugging Face featured on those days that the submissions did not
    cover, then write them all. A failed submissions fetch changes nothing; a failed
    description keeps the submissions and says so in the journal. Journaled as stage
    "ingest", source=arxiv."""
    days = sorted(set(days))
    if categories:
        chosen = list(categories)
    else:  # what readers follow, and what the operator configured
        with w.sessions() as session:
            chosen = categories_to_fetch(session, w.settings.arxiv_category_list)
    with recorded(w.sessions, stage="ingest", clock=clock) as detail:
        detail.update(source="arxiv", days=[d.isoformat() for d in days], categories=chosen)
        budget = Budget(
            max_bytes=w.settings.http_max_bytes, seconds=w.settings.fetch_deadline_seconds
        )
        with w.http_client() as client:
            result = arxiv.fetch_new(
                client,
                days=days,
                categories=chosen,
                base_url=w.settings.arxiv_api_base,
                page_size=w.settings.arxiv_page_size,
                retries=w.settings.http_retries,
                pause_seconds=w.settings.arxiv_pause_seconds,
                sleep=sleep or arxiv.pause,
                budget=budget,
            )
            detail["pages"] = result.pages
            since = dt.datetime.combine(days[0], dt.time(), tzinfo=dt.UTC)  # fetch_new: not empty
            described = _described(w, client, result, since=since, budget=budget, sleep=sleep)
        detail.update(described.detail)
        return _store(w, result=described.papers, now=clock(), detail=detail)


def store_papers(
    w: Wiring, *, result: FetchResult, source: str, clock: Clock = utcnow
) -> IngestReport:
    """Store papers fetched some other way (the bundled sample), journaled like an ingest."""
    with recorded(w.sessions, stage="ingest", clock=clock) as detail:
        detail["source"] = source
        return _store(w, result=result, now=clock(), detail=detail)


def _store(
    w: Wiring, *, result: FetchResult, now: dt.datetime, detail: dict[str, object]
) -> IngestReport:
    with session_scope(w.sessions) as session:
        report = ingest_papers(session, result=result, now=now)
    detail.update(
        fetched=report.fetched,
        inserted=report.inserted,
        updated=report.updated,
        rejected=len(report.rejected),
        rejected_examples=[_rejected(r) for r in report.rejected[:5]],
    )
    return report


def _rejected(item: RejectedItem) -> str:
    return f"#{item.index} {item.paper_id or '?'}: {item.reason}"


@dataclass(frozen=True, slots=True)
class _Described:
    papers: FetchResult
    detail: dict[str, object]


def _described(
    w: Wiring,
    client: httpx.Client,
    new: FetchResult,
    *,
    since: dt.datetime,
    budget: Budget,
    sleep: Callable[[float], None] | None,
) -> _Described:
    """``new`` and arXiv's description of the featured papers it does not cover."""
    with w.sessions() as session:
        featured = undescribed_featured(session, since=since, limit=MAX_DESCRIBED)
    covered = {p.id for p in new.papers}
    ids = [i for i in featured if i not in covered]
    if not ids:
        return _Described(new, {"described": 0})
    try:
        found = arxiv_lookup.fetch_by_ids(
            client,
            ids=ids,
            base_url=w.settings.arxiv_api_base,
            retries=w.settings.http_retries,
            pause_seconds=w.settings.arxiv_pause_seconds,
            sleep=sleep or arxiv.pause,
            budget=budget,
            after_another=True,
        )
    except SourceError as exc:  # the new submissions are good: keep them
        log.warning("arXiv did not describe %d featured papers: %s", len(ids), exc)
        return _Described(new, {"described": 0, "describe_error": clean_line(str(exc))[:300]})
    merged = FetchResult(
        papers=[*new.papers, *found.papers],
        rejected=[*new.rejected, *found.rejected],
        pages=new.pages + found.pages,
    )
    return _Described(merged, {"described": len(found.papers), "describe_asked": len(ids)})
