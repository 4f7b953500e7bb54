"""Ingest: idempotent upsert of papers plus one vote snapshot per paper per run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from papermail.db import make_engine
from papermail.dbadmin import alembic_config, upgrade
from papermail.models import Paper, PaperSnapshot
from papermail.pipeline import ingest
from papermail.pipeline.ingest import ingest_papers
from papermail.sources.arxiv import fetch_new
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


# --- arXiv as a second source: one paper, one row, each source keeps its own fields -------

ARXIV_FIXTURES = Path(__file__).parents[2] / "fixtures" / "arxiv"
HF_FIXTURES = Path(__file__).parents[2] / "fixtures" / "hf"
MERGED_ID = "2611.30001"  # on Hugging Face's day and in arXiv's listing


def arxiv_fetch(*names: str, day: dt.date, replace: tuple[str, str] | None = None) -> FetchResult:
    bodies = [(ARXIV_FIXTURES / n).read_bytes() for n in names]
    if replace:
        bodies = [b.replace(replace[0].encode(), replace[1].encode()) for b in bodies]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies.pop(0))

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return fetch_new(
            client,
            days=[day],
            categories=["cs.LG", "cs.CV", "cs.CL", "cs.RO", "cs.AI"],
            base_url="http://export.arxiv.test",
            page_size=5,
            sleep=lambda _: None,
        )


def hf_fetch() -> FetchResult:
    pages = [json.loads((HF_FIXTURES / "daily_2026-11-26_p0.json").read_text()), []]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages.pop(0))

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return fetch_daily(
            client, day=dt.date(2026, 11, 26), base_url="https://hf.test", sleep=lambda _: None
        )


HF_FIELDS = (
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
)
ARXIV_FIELDS = ("categories", "arxiv_comment", "journal_ref")


def test_a_new_version_updates_the_one_row_of_its_paper(session: Session) -> None:
    day = dt.date(2026, 11, 26)
    ingest_papers(session, result=arxiv_fetch("earlier_2026-11-26_v1.xml", day=day), now=FIXED_NOW)
    session.commit()
    first = session.get(Paper, "2611.40001")
    assert first is not None and first.title.endswith("(draft)")
    assert (first.source, first.categories, first.arxiv_comment) == (
        "arxiv",
        ["cs.RO"],
        "8 pages, 6 figures",
    )

    day_result = arxiv_fetch("day_2026-11-26_p0.xml", "day_2026-11-26_p1.xml", day=day)
    report = ingest_papers(session, result=day_result, now=LATER)
    session.commit()

    assert (report.fetched, report.inserted, report.updated) == (6, 5, 1)
    assert count(session, Paper) == 6  # 2611.40001v1 and v2 are one row
    session.expire_all()
    updated = session.get(Paper, "2611.40001")
    assert updated is not None
    assert updated.title == "Legged Locomotion from Sparse Proprioception"
    assert updated.authors == ["Aiko Tanaka", "Pierre Martin", "Lena Vogel"]
    assert updated.categories == ["cs.RO", "cs.LG"]
    assert updated.arxiv_comment == "v2: corrected Table 2; 8 pages, 6 figures"
    assert (updated.first_seen_at, updated.updated_at) == (FIXED_NOW, LATER)
    grasp = session.get(Paper, "2611.40002")
    assert grasp is not None and grasp.journal_ref.startswith("IEEE Robotics")  # type: ignore[union-attr]
    # arXiv counts no votes: no snapshot that would read as zero upvotes.
    assert report.snapshots == 0 and count(session, PaperSnapshot) == 0


def test_hf_then_arxiv_keeps_hf_fields_and_adds_arxiv_fields(session: Session) -> None:
    ingest_papers(session, result=hf_fetch(), now=FIXED_NOW)
    session.commit()
    row = session.get(Paper, MERGED_ID)
    assert row is not None
    hf_values = {name: getattr(row, name) for name in HF_FIELDS}
    assert hf_values["upvotes"] == 142 and hf_values["organization"]
    snapshots = count(session, PaperSnapshot)

    merged = arxiv_fetch("hf_merge_2026-11-24.xml", day=dt.date(2026, 11, 24))
    report = ingest_papers(session, result=merged, now=LATER)
    session.commit()
    session.expire_all()

    assert (report.inserted, report.updated) == (0, 1)
    row = session.get(Paper, MERGED_ID)
    assert row is not None
    assert {name: getattr(row, name) for name in HF_FIELDS} == hf_values  # never overwritten
    assert row.categories == ["cs.LG", "cs.AI", "cs.CL"]
    assert row.arxiv_comment == "NeurIPS 2026 workshop; 14 pages"
    assert row.journal_ref == "Proc. AgentsWS 2026, pp. 1-14"
    assert row.source == "hf"  # where it came from first
    assert count(session, PaperSnapshot) == snapshots


def test_arxiv_then_hf_keeps_arxiv_fields_and_adds_hf_fields(session: Session) -> None:
    merged = arxiv_fetch("hf_merge_2026-11-24.xml", day=dt.date(2026, 11, 24))
    ingest_papers(session, result=merged, now=FIXED_NOW)
    session.commit()
    row = session.get(Paper, MERGED_ID)
    assert row is not None and (row.source, row.upvotes, row.organization) == ("arxiv", 0, None)
    arxiv_values = {name: getattr(row, name) for name in ARXIV_FIELDS}

    ingest_papers(session, result=hf_fetch(), now=LATER)
    session.commit()
    session.expire_all()

    row = session.get(Paper, MERGED_ID)
    assert row is not None
    assert {name: getattr(row, name) for name in ARXIV_FIELDS} == arxiv_values  # never erased
    assert row.upvotes == 142
    assert row.organization == "Multimedia and Human Understanding Group"
    assert row.github_repo == "https://github.com/mhug/smore"
    assert row.submitted_on_daily_at is not None
    assert row.source == "arxiv"  # where it came from first
    # And arXiv again: HF's votes survive a third fetch.
    ingest_papers(session, result=merged, now=LATER + dt.timedelta(hours=1))
    session.commit()
    session.expire_all()
    row = session.get(Paper, MERGED_ID)
    assert row is not None and row.upvotes == 142


def test_each_source_writes_only_the_fields_it_owns() -> None:
    hf, arxiv = set(ingest.writable_fields("hf")), set(ingest.writable_fields("arxiv"))
    shared = {"title", "summary", "authors", "published_at"}
    assert hf == shared | set(HF_FIELDS)
    assert arxiv == shared | set(ARXIV_FIELDS)
    assert "source" not in hf | arxiv


def test_migration_0004_upgrades_and_downgrades_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'migrate.db'}")  # foreign keys on
    upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO papers (id, title, summary, authors, upvotes, num_comments,"
                " ai_keywords, source, first_seen_at, updated_at) VALUES ('2611.00001', 'T',"
                " '', '[]', 3, 0, '[]', 'hf', '2026-11-01', '2026-11-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO paper_snapshots (paper_id, observed_at, upvotes, num_comments)"
                " VALUES ('2611.00001', '2026-11-01', 3, 0)"
            )
        )
    upgrade(engine, "0004")
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT categories, arxiv_comment, journal_ref FROM papers")
        ).one() == ("[]", None, None)

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("papers")}
        assert not columns & {"categories", "arxiv_comment", "journal_ref"}
        # No copy-and-swap of papers: the snapshots (ON DELETE CASCADE) survive.
        assert conn.execute(text("SELECT count(*) FROM paper_snapshots")).scalar() == 1
    upgrade(engine)  # and back up again


def test_arxiv_fetches_what_active_readers_follow_and_what_is_configured(
    session: Session,
) -> None:
    from papermail.models import Subscriber, SubscriberStatus
    from papermail.pipeline.ingest import categories_to_fetch

    session.add_all(
        [
            Subscriber(email="a@example.org", arxiv_categories=["cs.RO", "cs.CV"]),
            Subscriber(email="b@example.org", arxiv_categories=["cs.RO"]),
            Subscriber(email="c@example.org"),
            Subscriber(
                email="gone@example.org",
                arxiv_categories=["math.AG"],
                status=SubscriberStatus.UNSUBSCRIBED,
            ),
        ]
    )
    session.flush()
    for row in session.scalars(select(Subscriber)):
        if row.email != "gone@example.org":
            row.status = SubscriberStatus.ACTIVE
    session.flush()
    assert categories_to_fetch(session, ["cs.LG", "cs.RO"]) == ["cs.LG", "cs.RO", "cs.CV"]
    assert categories_to_fetch(session, []) == ["cs.CV", "cs.RO"]


def test_featured_papers_arxiv_has_not_described_newest_first(session: Session) -> None:
    since = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)

    def featured(pid: str, day: int) -> PaperIn:
        return paper(pid, submitted_on_daily_at=dt.datetime(2026, 11, day, 9, tzinfo=dt.UTC))

    ingest_papers(
        session,
        result=result_of(
            featured("2611.00001", 24),
            featured("2611.00002", 26),
            featured("2611.00003", 25),
            featured("2611.00004", 23),  # featured before the window
            paper("2611.00005"),  # never featured (arXiv only, say)
        ),
        now=FIXED_NOW,
    )
    row = session.get(Paper, "2611.00003")
    assert row is not None
    row.categories = ["cs.RO"]  # described already
    session.commit()

    found = ingest.undescribed_featured(session, since=since, limit=10)
    assert found == ["2611.00002", "2611.00001"]
    assert ingest.undescribed_featured(session, since=since, limit=1) == ["2611.00002"]
