"""The bench's synthetic readers: what `prepare` COPYs, checked without PostgreSQL.

The row generators are what `seed_subscribers` and `seed_feedback` stream into COPY;
tests/integration runs them against the real database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter

import pytest

from papermail.config import Settings
from papermail.sources.hf import load_sample
from papermail_dev.bench.scratch import (
    FEEDBACK_COLUMNS,
    HISTORY_DAYS,
    MARKS,
    SUBSCRIBER_COLUMNS,
    WEIGHTS,
    feedback_rows,
    relevance_weights,
    subscriber_rows,
)

UNTIL = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
PAPERS = [paper.id for paper in load_sample().papers]
READERS = range(1, 2001)


def columns(listed: str) -> list[str]:
    return [name.strip() for name in listed.split(",")]


def test_subscriber_rows_are_todays_rows_for_a_seed() -> None:
    # The default bench's figures compare across days only while its readers stay the
    # same: this digest is of the rows seed_subscribers wrote before feedback histories.
    rows = list(subscriber_rows(1000, seed=7, now="N"))
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    assert digest == "53debd9c0c62a343760d4a34d8abfa48a4d7c5a9c2e76b24cf0d1a9f3a12308b"
    assert all(len(row) == len(columns(SUBSCRIBER_COLUMNS)) for row in rows)


def test_relevance_weights_are_deterministic_and_cover_every_setting() -> None:
    weights = list(relevance_weights(2000, seed=7))
    assert weights == list(relevance_weights(2000, seed=7))
    assert weights != list(relevance_weights(2000, seed=8))
    counts = Counter(weights)
    assert set(counts) == set(WEIGHTS) == {0.25, 0.5, 0.75, 1.0}
    assert counts[0.5] == max(counts.values())  # the default is the most common one
    # Trending-leaning readers share selections: a tenth of them keeps a million readers'
    # selections over 90% distinct (a fifth gave 88.1%).
    assert 0.08 < counts[0.25] / len(weights) < 0.12


def test_feedback_rows_are_deterministic_for_a_seed() -> None:
    first = list(feedback_rows(READERS, papers=PAPERS, seed=7, until=UNTIL))
    assert first == list(feedback_rows(READERS, papers=PAPERS, seed=7, until=UNTIL))
    assert first != list(feedback_rows(READERS, papers=PAPERS, seed=8, until=UNTIL))


def test_nearly_every_reader_has_at_least_three_marks() -> None:
    marks = Counter(row[0] for row in feedback_rows(READERS, papers=PAPERS, seed=7, until=UNTIL))
    with_three = sum(1 for reader in READERS if marks[reader] >= 3)
    assert with_three >= 0.9 * len(READERS)
    assert set(marks) == set(READERS)
    assert all(MARKS[0] <= count <= MARKS[1] for count in marks.values())
    assert {MARKS[0], MARKS[1]} <= set(marks.values())  # both ends happen


def test_feedback_rows_are_well_formed_copy_rows() -> None:
    rows = list(feedback_rows(READERS, papers=PAPERS, seed=7, until=UNTIL))
    assert all(len(row) == len(columns(FEEDBACK_COLUMNS)) for row in rows)
    assert columns(FEEDBACK_COLUMNS) == ["subscriber_id", "paper_id", "direction", "created_at"]
    for subscriber_id, paper_id, direction, created_at in rows:
        assert isinstance(subscriber_id, int) and subscriber_id in READERS
        assert paper_id in PAPERS  # stored by prepare: the foreign key holds
        assert direction in {"more", "less"}
        assert created_at.tzinfo is not None
        assert UNTIL - dt.timedelta(days=HISTORY_DAYS) <= created_at < UNTIL
    # The table keeps one mark per reader and paper (uq_feedback_subscriber_paper).
    assert len({(row[0], row[1]) for row in rows}) == len(rows)
    directions = Counter(row[2] for row in rows)
    assert 0.7 < directions["more"] / len(rows) < 0.9  # mostly "More like this"
    assert len({row[3].date() for row in rows}) >= HISTORY_DAYS - 1  # spread over the days
    assert len({row[1] for row in rows}) == len(PAPERS)  # every sample paper gets rated


def test_readers_rows_come_in_subscriber_order() -> None:
    # reader_feedback reads by id range; COPY needs nothing more than the ids' order.
    ids = [row[0] for row in feedback_rows(READERS, papers=PAPERS, seed=7, until=UNTIL)]
    assert ids == sorted(ids)


def test_too_few_papers_to_rate_is_an_error_not_a_short_history() -> None:
    with pytest.raises(ValueError, match="fewer than 12 marks"):
        list(feedback_rows(READERS, papers=PAPERS[:5], seed=7, until=UNTIL))


def test_marked_papers_are_earlier_ones_outside_the_editions_window() -> None:
    # A marked paper is never picked again, so marks on the edition's own papers would
    # shrink every reader's pool; readers mark what earlier emails sent them.
    from papermail.models import EditionKind
    from papermail.pipeline.editions import WINDOW
    from papermail.sources.hf import SAMPLE_DAY, load_sample
    from papermail_dev.bench.scratch import earlier_papers

    sample = load_sample()
    earlier = earlier_papers(sample)
    assert len(earlier.papers) == len(sample.papers)
    assert not {p.id for p in earlier.papers} & {p.id for p in sample.papers}
    assert [p.title for p in earlier.papers] == [p.title for p in sample.papers]
    window_starts = (
        dt.datetime.combine(SAMPLE_DAY, dt.time(), tzinfo=dt.UTC) - WINDOW[EditionKind.DAILY]
    )
    assert all(
        p.submitted_on_daily_at is not None and p.submitted_on_daily_at < window_starts
        for p in earlier.papers
    )


def test_the_benchs_papers_carry_categories_the_same_for_the_same_text(
    settings: Settings,
) -> None:
    # Relevance reads arXiv's categories beside the words, so the bench's papers have
    # them, as every paper does once the arXiv ingest has run; a marked earlier paper is
    # in the same field as today's paper with its text.
    from papermail import ingest_stages
    from papermail.dbadmin import upgrade
    from papermail.models import Paper
    from papermail.wiring import Wiring
    from papermail_dev.bench.scratch import BENCH_FIELDS, describe, earlier_papers

    w = Wiring(settings)
    upgrade(w.engine)
    sample = load_sample()
    earlier = earlier_papers(sample)
    for papers in (sample, earlier):
        ingest_stages.store_papers(w, result=papers, source="test")
        describe(w, papers)
    with w.sessions() as session:
        stored = {p.id: p.categories for p in session.query(Paper)}
    today = [stored[p.id] for p in sample.papers]
    assert today == [stored[p.id] for p in earlier.papers]
    assert {c[0] for c in today} == set(BENCH_FIELDS)
    assert all(c[-1] == "cs.LG" and len(set(c)) == len(c) for c in today)
    w.engine.dispose()
