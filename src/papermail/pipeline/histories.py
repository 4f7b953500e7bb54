"""What planning reads besides the subscriber rows: the edition's pool, each reader's
feedback, and the papers other editions already sent them.

Read a chunk of subscribers (an id range) at a time, in one or two queries per chunk,
so planning a million readers stays a few hundred queries. Caches are per planning run
and bounded: a paper's text is read once however many readers rated it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from typing import cast as type_cast

from sqlalchemy import Text, cast, select, text
from sqlalchemy.orm import Session, aliased

from papermail.db import on_postgres
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionItem,
    Feedback,
    FeedbackDirection,
    Paper,
    Variant,
)
from papermail.pipeline import relevance
from papermail.pipeline.picking import PoolPaper

MAX_MARKS = 50  # a reader's most recent marks that shape their model; older ones age out
CACHE_LIMIT = 50_000  # entries a run keeps per cache before starting over
NOT_RECEIVED = (DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)
MORE = FeedbackDirection.MORE.value

Rated = tuple[tuple[relevance.Paper, ...], tuple[relevance.Paper, ...]]  # (liked, disliked)


@dataclass(frozen=True, slots=True)
class Histories:
    """For one chunk of readers, by subscriber id; absent means none."""

    feedback: dict[int, Rated] = field(default_factory=dict)
    seen: dict[int, frozenset[str]] = field(default_factory=dict)


def as_relevance_paper(paper: Paper) -> relevance.Paper:
    return relevance.Paper(
        paper_id=paper.id,
        title=paper.title,
        abstract=paper.summary or "",
        keywords=tuple(paper.ai_keywords or ()),
        authors=tuple(paper.authors or ()),
        organization=paper.organization,
        categories=tuple(paper.categories or ()),
    )


def pool_papers(session: Session, edition: Edition) -> list[PoolPaper]:
    """Every paper of the edition, in trending order: the pool readers' picks come from."""
    rows = session.execute(
        select(EditionItem.score, Paper)
        .join(Paper, Paper.id == EditionItem.paper_id)
        .where(EditionItem.edition_id == edition.id)
        .order_by(EditionItem.rank)
    )
    return [
        PoolPaper(
            paper=as_relevance_paper(paper),
            trending=float(score),
            upvotes=paper.upvotes or 0,
            categories=tuple(paper.categories or ()),
            # Came from arXiv and Hugging Face has not featured it (yet).
            arxiv_only=paper.source == "arxiv" and paper.submitted_on_daily_at is None,
        )
        for score, paper in rows
    ]


def overlapping_editions(session: Session, edition: Edition) -> tuple[int, ...]:
    """Other editions that share a paper with this one (a weekly and its days' dailies).

    Only their deliveries can have sent a reader one of this edition's papers; daily
    editions never share papers with each other, so for most plans this is empty and
    no reader's history needs reading at all.
    """
    other = aliased(EditionItem)
    mine = select(EditionItem.paper_id).where(EditionItem.edition_id == edition.id)
    found = session.scalars(
        select(other.edition_id)
        .where(other.paper_id.in_(mine), other.edition_id != edition.id)
        .distinct()
    )
    return tuple(sorted(found))


def papers_sent(
    session: Session,
    first_id: int,
    last_id: int,
    *,
    editions: tuple[int, ...],
    memo: dict[str, frozenset[str]],
) -> dict[int, frozenset[str]]:
    """{subscriber: papers the given editions sent or will send them} for an id range."""
    if not editions:
        return {}
    rows = session.execute(
        select(Delivery.subscriber_id, Delivery.variant_key).where(
            Delivery.subscriber_id.between(first_id, last_id),
            Delivery.edition_id.in_(editions),
            Delivery.status.not_in(NOT_RECEIVED),
        )
    ).all()
    _load_selections(session, {key for _sid, key in rows} - memo.keys(), memo)
    seen: dict[int, frozenset[str]] = {}
    for subscriber_id, key in rows:
        seen[subscriber_id] = seen.get(subscriber_id, frozenset()) | memo.get(key, frozenset())
    return seen


def _load_selections(session: Session, keys: set[str], memo: dict[str, frozenset[str]]) -> None:
    if len(memo) + len(keys) > CACHE_LIMIT:
        memo.clear()
    ordered = sorted(keys)
    for start in range(0, len(ordered), 1000):
        rows = session.execute(
            select(Variant.key, Variant.selection).where(
                Variant.key.in_(ordered[start : start + 1000])
            )
        )
        for key, selection in type_cast(Iterable[tuple[str, list[Any] | None]], rows):
            memo[key] = frozenset(str(pair[0]) for pair in selection or ())


def reader_feedback(
    session: Session, first_id: int, last_id: int, *, papers: dict[str, relevance.Paper]
) -> dict[int, Rated]:
    """{subscriber: (liked, disliked)}, oldest first, for readers in an id range."""
    marks = _marks(session, first_id, last_id)
    _load_papers(session, {pid for found, _more in marks.values() for pid in found}, papers)
    out: dict[int, Rated] = {}
    for subscriber_id, (found, more) in marks.items():
        liked: list[relevance.Paper] = []
        disliked: list[relevance.Paper] = []
        for pid, up in zip(found, more, strict=True):
            if (paper := papers.get(pid)) is not None:
                (liked if up else disliked).append(paper)
        out[subscriber_id] = (tuple(liked), tuple(disliked))
    return out


_PG_MARKS = text(
    # One row a reader, their marks as two arrays: 7.5 rows a reader cost the driver and
    # the grouping in Python ~50 us a reader.
    "SELECT subscriber_id,"
    " array_agg(paper_id ORDER BY created_at, id),"
    " array_agg(direction = 'more' ORDER BY created_at, id)"
    " FROM feedback WHERE subscriber_id BETWEEN :first AND :last GROUP BY subscriber_id"
)


def _marks(
    session: Session, first_id: int, last_id: int
) -> dict[int, tuple[list[str], list[bool]]]:
    """{subscriber: (papers, "more like this"?)}: their last MAX_MARKS marks, oldest first."""
    if on_postgres(session):
        rows = session.execute(_PG_MARKS, {"first": first_id, "last": last_id})
        return {
            sid: (list(found[-MAX_MARKS:]), list(more[-MAX_MARKS:]))
            for sid, found, more in type_cast(Iterable[tuple[int, list[str], list[bool]]], rows)
        }
    marks: dict[int, tuple[list[str], list[bool]]] = {}
    for subscriber_id, paper_id, direction in session.execute(
        # The direction as text: an enum per row cost more than the query.
        select(Feedback.subscriber_id, Feedback.paper_id, cast(Feedback.direction, Text))
        .where(Feedback.subscriber_id.between(first_id, last_id))
        .order_by(Feedback.subscriber_id, Feedback.created_at, Feedback.id)
    ):
        found, more = marks.setdefault(subscriber_id, ([], []))
        found.append(paper_id)
        more.append(direction == MORE)
    return {sid: (found[-MAX_MARKS:], more[-MAX_MARKS:]) for sid, (found, more) in marks.items()}


def _load_papers(session: Session, ids: Iterable[str], cache: dict[str, relevance.Paper]) -> None:
    missing = sorted(set(ids) - cache.keys())
    if len(cache) + len(missing) > CACHE_LIMIT:
        cache.clear()
        missing = sorted(set(ids))
    for start in range(0, len(missing), 1000):
        for paper in session.scalars(
            select(Paper).where(Paper.id.in_(missing[start : start + 1000]))
        ):
            cache[paper.id] = as_relevance_paper(paper)
