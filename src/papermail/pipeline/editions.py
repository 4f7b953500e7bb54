"""Build the day's edition: the ranked papers every digest of that day draws from."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papermail.models import Edition, EditionItem, EditionKind, Paper, PaperSnapshot
from papermail.pipeline import ranking

log = logging.getLogger(__name__)

# A daily edition's pool is what was submitted to Daily Papers, or newly announced on
# arXiv, in the two days before its morning (HF days follow US time, so "yesterday"
# alone would miss late papers), minus what an earlier daily edition already carried.
# A weekly one, the last 7 days. Every reader's picks come from the pool.
WINDOW = {EditionKind.DAILY: dt.timedelta(days=2), EditionKind.WEEKLY: dt.timedelta(days=7)}


@dataclass(frozen=True, slots=True)
class EditionResult:
    edition: Edition | None  # None: no candidate papers, nothing to build
    created: bool


def nominal_time(day: dt.date, *, hour: int = 6) -> dt.datetime:
    """The instant an edition is ranked at; fixed per day so rebuilding is deterministic."""
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def build_edition(
    session: Session, *, day: dt.date, kind: EditionKind, size: int, rank_hour: int = 6
) -> EditionResult:
    """Idempotent: an existing edition for (day, kind) is returned unchanged."""
    existing = _find(session, day, kind)
    if existing is not None:
        return EditionResult(existing, created=False)
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    papers = _candidates(session, start=start - WINDOW[kind], end=start, kind=kind)
    if not papers:
        log.info("no papers for the %s edition of %s", kind.value, day)
        return EditionResult(None, created=False)
    now = nominal_time(day, hour=rank_hour)
    ranked = ranking.rank(
        (_signals(p) for p in papers),
        now=now,
        velocities=_velocities(session, [p.id for p in papers], now=now),
        limit=size,
    )
    edition = Edition(day=day, kind=kind)
    edition.items = [
        EditionItem(paper_id=s.paper_id, rank=i, score=s.score) for i, s in enumerate(ranked, 1)
    ]
    session.add(edition)
    try:
        session.flush()
    except IntegrityError:
        # Another worker built it first between our check and insert: theirs stands.
        session.rollback()
        return EditionResult(_find(session, day, kind), created=False)
    return EditionResult(edition, created=True)


def _find(session: Session, day: dt.date, kind: EditionKind) -> Edition | None:
    return session.scalar(select(Edition).where(Edition.day == day, Edition.kind == kind))


def _candidates(
    session: Session, *, start: dt.datetime, end: dt.datetime, kind: EditionKind
) -> list[Paper]:
    """The window's papers: featured on Daily Papers in it, or new on arXiv in it (and
    not featured: such a paper counts from the day Hugging Face featured it)."""
    featured = and_(Paper.submitted_on_daily_at >= start, Paper.submitted_on_daily_at < end)
    new_on_arxiv = and_(
        Paper.submitted_on_daily_at.is_(None),
        Paper.source == "arxiv",
        Paper.published_at >= start,
        Paper.published_at < end,
    )
    query = select(Paper).where(or_(featured, new_on_arxiv))
    if kind is EditionKind.DAILY:
        already = (
            select(EditionItem.paper_id)
            .join(Edition)
            .where(Edition.kind == EditionKind.DAILY, Edition.day < end.date())
        )
        query = query.where(Paper.id.not_in(already))
    return list(session.scalars(query))


def _signals(paper: Paper) -> ranking.PaperSignals:
    return ranking.PaperSignals(
        paper_id=paper.id,
        upvotes=paper.upvotes,
        num_comments=paper.num_comments,
        github_stars=paper.github_stars or 0,
        submitted_at=paper.submitted_on_daily_at,
    )


def _velocities(session: Session, paper_ids: list[str], *, now: dt.datetime) -> dict[str, float]:
    rows = session.execute(
        select(PaperSnapshot.paper_id, PaperSnapshot.observed_at, PaperSnapshot.upvotes).where(
            PaperSnapshot.paper_id.in_(paper_ids),
            PaperSnapshot.observed_at >= now - ranking.VELOCITY_WINDOW,
            PaperSnapshot.observed_at <= now,
        )
    )
    history: dict[str, list[ranking.Snapshot]] = {}
    for paper_id, observed_at, upvotes in rows:
        history.setdefault(paper_id, []).append(ranking.Snapshot(observed_at, upvotes))
    return {pid: ranking.velocity(snaps, now=now) for pid, snaps in history.items()}


def latest_edition(session: Session, *, kind: EditionKind, on_or_before: dt.date) -> Edition | None:
    return session.scalar(
        select(Edition)
        .where(Edition.kind == kind, Edition.day <= on_or_before)
        .order_by(Edition.day.desc())
        .limit(1)
    )
