"""Editions: built once per (day, kind) from a fixed window, ranked deterministically."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import Edition, EditionItem, EditionKind, Paper, PaperSnapshot
from papermail.pipeline import editions
from papermail.pipeline.editions import build_edition, latest_edition, nominal_time
from papermail.pipeline.ingest import ingest_papers
from papermail.sources.hf import SAMPLE_DAY, load_sample
from tests.conftest import FIXED_NOW

DAY = dt.date(2026, 11, 27)
MIDNIGHT = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC)
DAILY, WEEKLY = EditionKind.DAILY, EditionKind.WEEKLY


def add_paper(
    session: Session, pid: str, submitted: dt.datetime | None, *, upvotes: int = 10
) -> Paper:
    paper = Paper(id=pid, title=f"Paper {pid}", submitted_on_daily_at=submitted, upvotes=upvotes)
    session.add(paper)
    session.flush()
    return paper


def paper_ids(edition: Edition | None) -> set[str]:
    assert edition is not None
    return {item.paper_id for item in edition.items}


def items_of(edition: Edition | None) -> list[tuple[str, int, float]]:
    assert edition is not None
    return [(i.paper_id, i.rank, i.score) for i in edition.items]


def test_builds_ranked_items_from_the_sample(session: Session) -> None:
    ingest_papers(session, result=load_sample(), now=FIXED_NOW)
    result = build_edition(session, day=SAMPLE_DAY + dt.timedelta(days=1), kind=DAILY, size=10)
    assert result.created is True
    assert result.edition is not None
    ranks = [item.rank for item in result.edition.items]
    scores = [item.score for item in result.edition.items]
    assert ranks == list(range(1, 11))
    assert scores == sorted(scores, reverse=True)


def test_second_build_returns_the_same_edition_unchanged(session: Session) -> None:
    ingest_papers(session, result=load_sample(), now=FIXED_NOW)
    first = build_edition(session, day=DAY, kind=DAILY, size=20)
    before = items_of(first.edition)
    session.commit()
    # Votes move after the edition is built; the edition must not.
    for paper in session.scalars(select(Paper)):
        paper.upvotes = 0
    second = build_edition(session, day=DAY, kind=DAILY, size=50)
    assert second.created is False
    assert second.edition is not None and first.edition is not None
    assert second.edition.id == first.edition.id
    assert items_of(second.edition) == before
    assert session.scalar(select(func.count()).select_from(Edition)) == 1


def test_no_papers_in_window_gives_no_edition(session: Session) -> None:
    add_paper(session, "old", MIDNIGHT - dt.timedelta(days=5))
    result = build_edition(session, day=DAY, kind=DAILY, size=10)
    assert result == editions.EditionResult(None, created=False)
    assert session.scalar(select(func.count()).select_from(Edition)) == 0


def test_size_limits_the_items(session: Session) -> None:
    for i in range(5):
        add_paper(session, f"p{i}", MIDNIGHT - dt.timedelta(hours=i + 1), upvotes=10 + i)
    result = build_edition(session, day=DAY, kind=DAILY, size=3)
    assert len(items_of(result.edition)) == 3


def test_daily_window_is_the_two_days_before_the_day(session: Session) -> None:
    start = MIDNIGHT - dt.timedelta(days=2)
    add_paper(session, "at-start", start)
    add_paper(session, "just-before-start", start - dt.timedelta(microseconds=1))
    add_paper(session, "yesterday", MIDNIGHT - dt.timedelta(hours=1))
    add_paper(session, "last-instant", MIDNIGHT - dt.timedelta(microseconds=1))
    add_paper(session, "on-the-day", MIDNIGHT)
    add_paper(session, "undated", None)
    result = build_edition(session, day=DAY, kind=DAILY, size=50)
    assert paper_ids(result.edition) == {"at-start", "yesterday", "last-instant"}


def test_weekly_window_is_the_seven_days_before_the_day(session: Session) -> None:
    start = MIDNIGHT - dt.timedelta(days=7)
    add_paper(session, "at-start", start)
    add_paper(session, "too-old", start - dt.timedelta(seconds=1))
    add_paper(session, "five-days", MIDNIGHT - dt.timedelta(days=5))
    add_paper(session, "on-the-day", MIDNIGHT)
    result = build_edition(session, day=DAY, kind=WEEKLY, size=50)
    assert paper_ids(result.edition) == {"at-start", "five-days"}


def test_daily_excludes_papers_an_earlier_daily_edition_carried(session: Session) -> None:
    add_paper(session, "day-before-yesterday", MIDNIGHT - dt.timedelta(hours=30))
    add_paper(session, "yesterday", MIDNIGHT - dt.timedelta(hours=3))
    earlier = build_edition(session, day=DAY - dt.timedelta(days=1), kind=DAILY, size=50)
    assert paper_ids(earlier.edition) == {"day-before-yesterday"}
    today = build_edition(session, day=DAY, kind=DAILY, size=50)
    assert paper_ids(today.edition) == {"yesterday"}


def test_daily_keeps_papers_that_only_a_weekly_edition_carried(session: Session) -> None:
    add_paper(session, "p", MIDNIGHT - dt.timedelta(hours=30))
    build_edition(session, day=DAY - dt.timedelta(days=1), kind=WEEKLY, size=50)
    assert paper_ids(build_edition(session, day=DAY, kind=DAILY, size=50).edition) == {"p"}


def test_weekly_repeats_what_daily_editions_carried(session: Session) -> None:
    add_paper(session, "p", MIDNIGHT - dt.timedelta(hours=30))
    build_edition(session, day=DAY - dt.timedelta(days=1), kind=DAILY, size=50)
    assert paper_ids(build_edition(session, day=DAY, kind=WEEKLY, size=50).edition) == {"p"}


def test_daily_built_out_of_order_is_not_emptied_by_a_later_day(session: Session) -> None:
    add_paper(session, "p", MIDNIGHT - dt.timedelta(hours=30))
    build_edition(session, day=DAY, kind=DAILY, size=50)
    earlier = build_edition(session, day=DAY - dt.timedelta(days=1), kind=DAILY, size=50)
    assert paper_ids(earlier.edition) == {"p"}


def test_daily_with_only_already_carried_papers_gives_no_edition(session: Session) -> None:
    add_paper(session, "p", MIDNIGHT - dt.timedelta(hours=30))
    build_edition(session, day=DAY - dt.timedelta(days=1), kind=DAILY, size=50)
    assert build_edition(session, day=DAY, kind=DAILY, size=50).edition is None


def test_rebuilding_from_the_same_data_gives_identical_scores(
    session_factory: sessionmaker[Session],
) -> None:
    def build() -> list[tuple[str, int, float]]:
        with session_factory() as session:
            for table in (EditionItem, Edition, PaperSnapshot, Paper):
                session.query(table).delete()
            ingest_papers(session, result=load_sample(), now=FIXED_NOW)
            return items_of(build_edition(session, day=DAY, kind=DAILY, size=40).edition)

    assert build() == build()


def test_rank_hour_fixes_the_age_used_for_decay(session: Session) -> None:
    submitted = MIDNIGHT - dt.timedelta(hours=4)
    add_paper(session, "p", submitted, upvotes=11)
    result = build_edition(session, day=DAY, kind=DAILY, size=5, rank_hour=6)
    [(pid, rank, score)] = items_of(result.edition)
    assert (pid, rank) == ("p", 1)
    assert score == pytest.approx(10 / (10 + 2) ** 1.8)


def test_velocity_comes_from_snapshots_before_the_nominal_time(session: Session) -> None:
    ranked_at = nominal_time(DAY)
    add_paper(session, "flat", MIDNIGHT - dt.timedelta(hours=4), upvotes=41)
    add_paper(session, "riser", MIDNIGHT - dt.timedelta(hours=4), upvotes=31)
    session.add_all(
        [
            PaperSnapshot(
                paper_id="riser", observed_at=ranked_at - dt.timedelta(hours=3), upvotes=1
            ),
            PaperSnapshot(
                paper_id="riser", observed_at=ranked_at - dt.timedelta(hours=1), upvotes=31
            ),
            # After the nominal time: ignored, so a late rebuild ranks the same.
            PaperSnapshot(
                paper_id="flat", observed_at=ranked_at - dt.timedelta(hours=1), upvotes=41
            ),
            PaperSnapshot(
                paper_id="flat", observed_at=ranked_at + dt.timedelta(hours=1), upvotes=4000
            ),
        ]
    )
    session.flush()
    result = build_edition(session, day=DAY, kind=DAILY, size=5)
    scores = {pid: score for pid, _rank, score in items_of(result.edition)}
    assert scores["riser"] == pytest.approx((30 + 15 * 6) / (10 + 2) ** 1.8)
    assert scores["flat"] == pytest.approx(40 / (10 + 2) ** 1.8)
    assert [pid for pid, _r, _s in items_of(result.edition)] == ["riser", "flat"]


def test_daily_and_weekly_of_one_day_are_separate_editions(session: Session) -> None:
    add_paper(session, "p", MIDNIGHT - dt.timedelta(hours=3))
    daily = build_edition(session, day=DAY, kind=DAILY, size=5)
    weekly = build_edition(session, day=DAY, kind=WEEKLY, size=5)
    assert daily.created and weekly.created
    assert daily.edition is not None and weekly.edition is not None
    assert daily.edition.id != weekly.edition.id


def test_a_concurrent_builder_that_wins_the_insert_is_returned(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_factory() as setup:
        add_paper(setup, "p", MIDNIGHT - dt.timedelta(hours=3))
        setup.commit()
    with session_factory() as other:
        theirs = build_edition(other, day=DAY, kind=DAILY, size=5)
        other.commit()
    assert theirs.edition is not None
    real_find = editions._find
    calls: list[int] = []

    def late_find(session: Session, day: dt.date, kind: EditionKind) -> Edition | None:
        calls.append(1)
        # The first look happens before the other worker committed.
        return None if len(calls) == 1 else real_find(session, day, kind)

    monkeypatch.setattr(editions, "_find", late_find)
    with session_factory() as mine:
        result = build_edition(mine, day=DAY, kind=DAILY, size=5)
        assert len(calls) == 2  # our insert collided and we looked again
        assert result.created is False
        assert result.edition is not None and result.edition.id == theirs.edition.id
        assert mine.scalar(select(func.count()).select_from(Edition)) == 1


def test_latest_edition_is_the_newest_on_or_before_a_day(session: Session) -> None:
    for offset in (0, 1, 3):
        add_paper(session, f"p{offset}", MIDNIGHT - dt.timedelta(days=offset, hours=3))
    built = {
        offset: build_edition(session, day=DAY - dt.timedelta(days=offset), kind=DAILY, size=5)
        for offset in (3, 1, 0)
    }
    found = latest_edition(session, kind=DAILY, on_or_before=DAY - dt.timedelta(days=1))
    assert found is not None and found is built[1].edition
    assert latest_edition(session, kind=WEEKLY, on_or_before=DAY) is None


def test_new_arxiv_papers_of_the_window_join_the_pool_below_the_trending_ones(
    session: Session,
) -> None:
    add_paper(session, "2611.00001", MIDNIGHT - dt.timedelta(hours=5), upvotes=40)
    for pid, published in (
        ("2611.00002", MIDNIGHT - dt.timedelta(hours=20)),  # new on arXiv in the window
        ("2611.00003", MIDNIGHT - dt.timedelta(days=3)),  # too old for this edition
    ):
        session.add(Paper(id=pid, title=pid, source="arxiv", published_at=published))
    # On arXiv first, then featured: it counts from the day Hugging Face featured it.
    session.add(
        Paper(
            id="2611.00004",
            title="featured later",
            source="arxiv",
            published_at=MIDNIGHT - dt.timedelta(hours=30),
            submitted_on_daily_at=MIDNIGHT + dt.timedelta(hours=2),
        )
    )
    session.flush()
    edition = build_edition(session, day=DAY, kind=DAILY, size=50).edition
    assert [pid for pid, _rank, _score in items_of(edition)] == ["2611.00001", "2611.00002"]


def test_a_pool_cap_keeps_the_most_trending(session: Session) -> None:
    for n in range(5):
        add_paper(session, f"2611.0000{n}", MIDNIGHT - dt.timedelta(hours=3), upvotes=10 * n)
    edition = build_edition(session, day=DAY, kind=DAILY, size=2).edition
    assert [pid for pid, _rank, _score in items_of(edition)] == ["2611.00004", "2611.00003"]
