"""Store a fetched day: upsert papers and record one vote snapshot per voted paper.

The upsert is plain ORM (select existing ids, then insert or update), so it runs
the same on SQLite and PostgreSQL. Two ingests racing on a brand-new paper would
collide on the primary key; beat runs one ingest at a time, and the task retries
on IntegrityError if that ever happens.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from papermail.models import Paper, PaperSnapshot, Subscriber, SubscriberStatus
from papermail.sources.base import FetchResult, PaperIn, RejectedItem

log = logging.getLogger(__name__)

# Stays well under SQLite's bound-parameter limit and keeps IN lists reasonable.
CHUNK_SIZE = 500

# Always taken from the newest fetch: they are what the source says right now.
_CURRENT_FIELDS = ("title", "upvotes", "num_comments")
# Taken only when the fetch has a value: a field that is missing today (or was
# dropped as invalid) must not erase what an earlier fetch told us.
_KEPT_FIELDS = (
    "summary",
    "authors",
    "published_at",
    "submitted_on_daily_at",
    "github_repo",
    "github_stars",
    "project_page",
    "organization",
    "ai_summary",
    "ai_keywords",
    "thumbnail",
    "categories",
    "arxiv_comment",
    "journal_ref",
)
# A paper on both Hugging Face and arXiv is one row: each source alone writes the fields
# only it knows, so an arXiv fetch never zeroes the votes and HF never erases categories.
# Fields owned by nobody (title, summary, authors, published_at) follow the rules above
# whatever the source. ``source`` itself says where the row came from first: never updated.
_OWNED_FIELDS: dict[str, frozenset[str]] = {
    "hf": frozenset(
        {
            "upvotes",
            "num_comments",
            "submitted_on_daily_at",
            "github_repo",
            "github_stars",
            "project_page",
            "organization",
            "ai_summary",
            "ai_keywords",
            "thumbnail",
        }
    ),
    "arxiv": frozenset({"categories", "arxiv_comment", "journal_ref"}),
}
# Only these sources count votes; a snapshot from any other would read as zero votes.
_VOTING_SOURCES = frozenset({"hf"})


def writable_fields(source: str) -> tuple[str, ...]:
    """The fields an update from ``source`` may change, current ones first."""
    others = set().union(*(f for s, f in _OWNED_FIELDS.items() if s != source))
    return tuple(n for n in (*_CURRENT_FIELDS, *_KEPT_FIELDS) if n not in others)


@dataclass
class IngestReport:
    fetched: int
    inserted: int
    updated: int
    snapshots: int
    rejected: list[RejectedItem]


def ingest_papers(session: Session, *, result: FetchResult, now: dt.datetime) -> IngestReport:
    """Upsert ``result.papers`` and snapshot their votes at ``now``. Flushes; the caller commits."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    papers = _unique(result.papers)
    inserted = updated = snapshots = 0
    for chunk in _chunks(papers, CHUNK_SIZE):
        existing = _load(session, ids=[p.id for p in chunk])
        for incoming in chunk:
            row = existing.get(incoming.id)
            if row is None:
                session.add(_new_paper(incoming, now=now))
                inserted += 1
            else:
                _update_paper(row, incoming, now=now)
                updated += 1
            if incoming.source in _VOTING_SOURCES:
                snapshots += 1
                session.add(
                    PaperSnapshot(
                        paper_id=incoming.id,
                        observed_at=now,
                        upvotes=incoming.upvotes,
                        num_comments=incoming.num_comments,
                    )
                )
        session.flush()  # per chunk, so memory stays bounded on a big backfill
    report = IngestReport(
        fetched=len(papers),
        inserted=inserted,
        updated=updated,
        snapshots=snapshots,
        rejected=list(result.rejected),
    )
    log.info(
        "ingested %d papers: %d new, %d updated, %d rejected",
        report.fetched,
        inserted,
        updated,
        len(report.rejected),
    )
    return report


def _load(session: Session, *, ids: list[str]) -> dict[str, Paper]:
    rows = session.scalars(select(Paper).where(Paper.id.in_(ids)))
    return {row.id: row for row in rows}


def _new_paper(incoming: PaperIn, *, now: dt.datetime) -> Paper:
    return Paper(**incoming.model_dump(), first_seen_at=now, updated_at=now)


def _update_paper(row: Paper, incoming: PaperIn, *, now: dt.datetime) -> None:
    for name in writable_fields(incoming.source):
        # A plain PaperIn (Hugging Face) has no arXiv fields: absent reads as "no value".
        value = getattr(incoming, name, None)
        if name in _CURRENT_FIELDS or value not in (None, "", []):
            _set(row, name, value)
    row.updated_at = now
    # Without this, re-ingesting at the same instant with other changes would let the
    # column's onupdate=utcnow overwrite our clock with the wall clock.
    flag_modified(row, "updated_at")


def _set(row: Paper, name: str, value: object) -> None:
    # Assign only real changes so an unchanged paper produces no UPDATE of that column.
    if getattr(row, name) != value:
        setattr(row, name, value)


def _unique(papers: Sequence[PaperIn]) -> list[PaperIn]:
    # A hand-built FetchResult may repeat an id; two Paper objects with one key cannot flush.
    by_id: dict[str, PaperIn] = {}
    for paper in papers:
        by_id.setdefault(paper.id, paper)
    return list(by_id.values())


def _chunks(items: list[PaperIn], size: int) -> Iterator[list[PaperIn]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def categories_to_fetch(session: Session, configured: Sequence[str]) -> list[str]:
    """arXiv categories worth a fetch: those active readers follow, and the configured ones.

    Read as distinct JSON texts (a million readers choose a few thousand combinations)
    and decoded here: JSON array functions differ between SQLite and PostgreSQL.
    """
    chosen: set[str] = set()
    rows = session.scalars(
        select(cast(Subscriber.arxiv_categories, Text))
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .distinct()
    )
    for raw in rows:
        value = json.loads(raw) if raw else []
        if isinstance(value, list):
            chosen.update(str(code) for code in value)
    # The configured ones first, in their order; then what readers added.
    return list(dict.fromkeys([*configured, *sorted(chosen)]))


def undescribed_featured(session: Session, *, since: dt.datetime, limit: int) -> list[str]:
    """Papers Hugging Face featured since ``since`` that arXiv has not described (no
    categories yet), newest first: what the arXiv ingest asks arXiv for by id."""
    rows = session.execute(
        select(Paper.id, Paper.categories)
        .where(Paper.submitted_on_daily_at >= since)
        .order_by(Paper.submitted_on_daily_at.desc(), Paper.id)
    )
    return [paper_id for paper_id, categories in rows if not categories][:limit]
