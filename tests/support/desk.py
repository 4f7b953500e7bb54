"""Shared by the subscriber desk's tests: an edition with real papers (for test sends)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from papermail.models import Edition, EditionItem, EditionKind, Paper

TOPICS = ("diffusion", "robotics", "reinforcement learning")


def seed_papers_edition(
    session: Session, *, day: dt.date = dt.date(2026, 11, 30), kind: EditionKind = EditionKind.DAILY
) -> int:
    """A daily edition of three papers, one per topic in ``TOPICS``; returns its id. Flushes."""
    papers = []
    for n, topic in enumerate(TOPICS):
        pid = f"2611.{n:05d}"
        paper = session.get(Paper, pid) or Paper(
            id=pid,
            title=f"Paper {n} on {topic}",
            summary=f"A study of {topic}.",
            authors=["Ada Lovelace"],
            upvotes=100 - n,
            ai_keywords=[topic],
            submitted_on_daily_at=dt.datetime.combine(day, dt.time(3), tzinfo=dt.UTC),
        )
        session.add(paper)
        papers.append(paper)
    edition = Edition(
        day=day, kind=kind, created_at=dt.datetime.combine(day, dt.time(4), tzinfo=dt.UTC)
    )
    edition.items = [
        EditionItem(paper_id=p.id, rank=i + 1, score=1.0 / (i + 1)) for i, p in enumerate(papers)
    ]
    session.add(edition)
    session.flush()
    return edition.id
