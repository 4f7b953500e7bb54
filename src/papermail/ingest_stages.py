"""The stage API for ingest: fetch from Hugging Face and arXiv, then write, journaled as
stage "ingest". Like stages.py, it takes the process's Wiring and knows nothing of its
callers (Celery tasks, the CLI, the web app).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence

from papermail.clock import Clock, utcnow
from papermail.db import session_scope
from papermail.ops.jobs import recorded
from papermail.pipeline.ingest import IngestReport, categories_to_fetch, ingest_papers
from papermail.sources import arxiv
from papermail.sources.base import FetchResult, RejectedItem
from papermail.sources.hf import fetch_daily
from papermail.sources.http import Budget
from papermail.wiring import Wiring

log = logging.getLogger(__name__)


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
    and PAPERMAIL_ARXIV_CATEGORIES), then write them: a failed fetch changes nothing.
    Journaled as stage "ingest", source=arxiv."""
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
        return _store(w, result=result, now=clock(), detail=detail)


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
