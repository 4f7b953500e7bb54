"""Ingest: idempotent upsert of papers plus one vote snapshot per paper per run."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import Paper, PaperSnapshot
from papermail.pipeline import ingest
from papermail.pipeline.ingest import ingest_papers
from papermail.sources.base import FetchResult, PaperIn, RejectedItem, SourceError
from papermail.sources.hf import SAMPLE_DAY, fetch_daily, load_sample
from tests.conftest import FIXED_NOW

LATER = FIXED_NOW + dt.timedelta(minutes=30)


def result_of(*papers: PaperIn, rejected: list[RejectedItem] | None = None) -> FetchResult:
    return FetchResult(papers=list(papers), rejected=rejected or [], pages=1)


def paper(pid: str = "2611.00001", **fields: Any) -> PaperIn:
    return PaperIn(id=pid, title=fields.pop("title", f"Paper {pid}"), **fields)


def count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def columns(row: Paper) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in Paper.__table__.columns}


def test_first_ingest_inserts_every_paper_with_a_snapshot(session: Session) -> None:
    sample = load_sample()
    report = ingest_papers(session, result=sample, now=FIXED_NOW)
    session.commit()

    assert (report.fetched, report.inserted, report.updated, report.snapshots) == (40, 40, 0, 40)
    assert count(session, Paper) == 40 and count(session, PaperSnapshot) == 40
    stored = session.get(Paper, sample.papers[0].id)
    assert stored is not None
    assert stored.title == sample.papers[0].title
    assert stored.authors == sample.papers[0].authors
    assert stored.first_seen_at == FIXED_NOW and stored.updated_at == FIXED_NOW
    snapshot = session.scalars(
        select(PaperSnapshot).where(PaperSnapshot.paper_id == stored.id)
    ).one()
    assert (snapshot.observed_at, snapshot.upvotes, snapshot.num_comments) == (
        FIXED_NOW,
        stored.upvotes,
        stored.num_comments,
    )


def test_reingesting_the_same_data_only_touches_updated_at_and_adds_snapshots(
    session_factory: sessionmaker[Session],
) -> None:
    sample = load_sample()
    with session_factory() as session:
        ingest_papers(session, result=sample, now=FIXED_NOW)
        session.commit()
        before = {p.id: columns(p) for p in session.scalars(select(Paper))}

    with session_factory() as session:
        report = ingest_papers(session, result=sample, now=LATER)
        session.commit()
        after = {p.id: columns(p) for p in session.scalars(select(Paper))}
        assert count(session, PaperSnapshot) == 80

    assert (report.inserted, report.updated, report.snapshots) == (0, 40, 40)
    for pid, old in before.items():
        new = after[pid]
        assert new.pop("updated_at") == LATER and old.pop("updated_at") == FIXED_NOW
        assert new == old  # first_seen_at included: it never moves


def test_changed_votes_update_the_paper_and_are_snapshotted(session: Session) -> None:
    ingest_papers(session, result=result_of(paper(upvotes=3, num_comments=1)), now=FIXED_NOW)
    ingest_papers(
        session, result=result_of(paper(upvotes=17, num_comments=4, title="Renamed")), now=LATER
    )
    session.commit()

    stored = session.get(Paper, "2611.00001")
    assert stored is not None
    assert (stored.upvotes, stored.num_comments, stored.title) == (17, 4, "Renamed")
    assert (stored.first_seen_at, stored.updated_at) == (FIXED_NOW, LATER)
    history = session.execute(
        select(PaperSnapshot.observed_at, PaperSnapshot.upvotes).order_by(PaperSnapshot.observed_at)
    ).all()
    assert [tuple(r) for r in history] == [(FIXED_NOW, 3), (LATER, 17)]


def test_missing_optional_fields_do_not_erase_what_we_knew(session: Session) -> None:
    rich = paper(
        summary="Abstract.",
        authors=["A. Author"],
        github_repo="https://github.com/a/b",
        github_stars=5,
        organization="Org",
        ai_summary="Short.",
        ai_keywords=["k"],
        thumbnail="https://cdn.example/t.png",
    )
    ingest_papers(session, result=result_of(rich), now=FIXED_NOW)
    ingest_papers(session, result=result_of(paper(upvotes=9, github_stars=0)), now=LATER)
    session.commit()

    stored = session.get(Paper, "2611.00001")
    assert stored is not None
    assert (stored.summary, stored.authors, stored.github_repo, stored.organization) == (
        "Abstract.",
        ["A. Author"],
        "https://github.com/a/b",
        "Org",
    )
    assert (stored.ai_summary, stored.ai_keywords, stored.thumbnail) == (
        "Short.",
        ["k"],
        "https://cdn.example/t.png",
    )
    assert stored.github_stars == 0  # zero is a value, not a gap
    assert stored.upvotes == 9


def test_same_instant_reingest_keeps_our_clock_not_the_wall_clock(session: Session) -> None:
    ingest_papers(session, result=result_of(paper(upvotes=1)), now=FIXED_NOW)
    session.commit()
    ingest_papers(session, result=result_of(paper(upvotes=2)), now=FIXED_NOW)
    session.commit()
    stored = session.get(Paper, "2611.00001")
    assert stored is not None and stored.updated_at == FIXED_NOW


def test_duplicate_ids_in_one_result_are_stored_once(session: Session) -> None:
    result = result_of(paper(upvotes=1), paper(upvotes=2), paper("2611.00002"))
    report = ingest_papers(session, result=result, now=FIXED_NOW)
    session.commit()
    assert (report.fetched, report.inserted, report.snapshots) == (2, 2, 2)
    assert session.get(Paper, "2611.00001").upvotes == 1  # type: ignore[union-attr]


def test_ingest_works_across_chunks(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "CHUNK_SIZE", 2)
    ingest_papers(
        session, result=result_of(paper("2611.00001"), paper("2611.00003")), now=FIXED_NOW
    )
    papers = [paper(f"2611.0000{i}", upvotes=i) for i in range(1, 6)]
    report = ingest_papers(session, result=result_of(*papers), now=LATER)
    session.commit()
    assert (report.inserted, report.updated, report.snapshots) == (3, 2, 5)
    assert count(session, Paper) == 5 and count(session, PaperSnapshot) == 7


def test_an_empty_result_writes_nothing(session: Session) -> None:
    report = ingest_papers(session, result=result_of(), now=FIXED_NOW)
    assert (report.fetched, report.inserted, report.updated, report.snapshots) == (0, 0, 0, 0)
    assert count(session, Paper) == 0 and count(session, PaperSnapshot) == 0


def test_rejections_are_passed_through_to_the_report(session: Session) -> None:
    rejected = [RejectedItem(index=3, paper_id="2611.00009", reason="upvotes: must be an integer")]
    report = ingest_papers(session, result=result_of(paper(), rejected=rejected), now=FIXED_NOW)
    assert report.rejected == rejected


def test_ingest_flushes_but_leaves_the_commit_to_the_caller(session: Session) -> None:
    ingest_papers(session, result=result_of(paper()), now=FIXED_NOW)
    assert count(session, Paper) == 1  # visible in this transaction
    session.rollback()
    assert count(session, Paper) == 0


def test_naive_now_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ingest_papers(session, result=result_of(paper()), now=FIXED_NOW.replace(tzinfo=None))


def test_a_page_that_is_not_json_leaves_the_database_unchanged(session: Session) -> None:
    ingest_papers(session, result=load_sample(), now=FIXED_NOW)
    session.commit()
    before = {p.id: columns(p) for p in session.scalars(select(Paper))}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["p"] == "0":  # a good first page that would change votes...
            changed = [
                {"paper": {"id": pid, "title": "Changed", "upvotes": 999}}
                for pid in list(before)[:2]
            ]
            return httpx.Response(200, json=changed)
        return httpx.Response(200, text="<html>502 Bad Gateway</html>")  # ...then garbage

    with httpx.Client(transport=httpx.MockTransport(handler)) as client, pytest.raises(SourceError):
        result = fetch_daily(
            client, day=SAMPLE_DAY, base_url="https://hf.test", page_size=2, sleep=lambda _: None
        )
        ingest_papers(session, result=result, now=LATER)  # never reached
    session.commit()

    assert {p.id: columns(p) for p in session.scalars(select(Paper))} == before
    assert count(session, PaperSnapshot) == 40
