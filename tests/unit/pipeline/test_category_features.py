"""arXiv categories beside the words: what a reader's clicks on a field teach."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from papermail.pipeline import relevance
from papermail.pipeline.category_features import (
    CATEGORY_SHARE,
    CROSS_LIST,
    CategoryBlock,
    combined,
)
from papermail.pipeline.relevance import Paper, Pool, ReaderProfile
from papermail.pipeline.tfidf import TfidfScorer

from .test_relevance import make_pool

METHODS = ("svm", "profile")


def test_primary_counts_more_than_a_cross_list_and_rare_more_than_common() -> None:
    block = CategoryBlock([("cs.RO", "cs.LG"), ("cs.LG",), ("cs.LG",), ("cs.CV",)])
    row = block.rows([("cs.RO", "cs.LG")]).toarray()[0]
    ro, lg = row[block.columns["cs.RO"]], row[block.columns["cs.LG"]]
    assert np.linalg.norm(row) == pytest.approx(1.0)
    assert ro > lg > 0
    assert lg / ro == pytest.approx(
        CROSS_LIST * block.idf[block.columns["cs.LG"]] / block.idf[block.columns["cs.RO"]]
    )
    # Listed twice, counted once; unknown to the pool, dropped; none at all, zeros.
    again = block.rows([("cs.RO", "cs.LG", "cs.RO", "math.AG")]).toarray()[0]
    assert again == pytest.approx(row)
    assert block.rows([(), ("math.AG",)]).nnz == 0


def test_two_described_papers_are_as_alike_as_their_words_and_their_fields() -> None:
    papers = make_pool(4)
    words = TfidfScorer()
    words.fit(papers)
    text = words.encode(papers[:2]).toarray()
    a = dataclasses.replace(papers[0], categories=("cs.RO", "cs.LG"))
    b = dataclasses.replace(papers[1], categories=("cs.RO",))
    block = CategoryBlock([a.categories, b.categories])
    cats = block.rows([a.categories, b.categories]).toarray()

    rows = combined(words.encode([a, b]), block.rows([a.categories, b.categories])).toarray()

    expected = (1 - CATEGORY_SHARE) * text[0] @ text[1] + CATEGORY_SHARE * cats[0] @ cats[1]
    assert rows[0] @ rows[1] == pytest.approx(expected)
    assert np.linalg.norm(rows, axis=1) == pytest.approx([1.0, 1.0])


def test_a_pool_without_categories_scores_as_its_words_alone() -> None:
    papers = make_pool(5)
    scorer = TfidfScorer()
    scorer.fit(papers)
    block = CategoryBlock([p.categories for p in papers])
    words = scorer.encode(papers)
    assert block.width == 0
    assert combined(words, block.rows([p.categories for p in papers])) is words
    # An undescribed paper in a described pool: its words, at full length.
    described = CategoryBlock([("cs.RO",)])
    row = combined(words[:1], described.rows([()]))
    assert row.toarray()[0, : words.shape[1]] == pytest.approx(words[:1].toarray()[0])


@pytest.mark.parametrize("method", METHODS)
def test_liking_papers_of_a_field_brings_its_other_papers_whatever_their_words(
    method: str,
) -> None:
    """Robotics and vision papers, each half labelled cs.RO, half cs.CV regardless of their
    words: after liking cs.CV papers, a reader's list fills with cs.CV papers, of both kinds
    of words, which words alone could not find."""
    papers = [
        dataclasses.replace(p, categories=("cs.CV",) if i % 2 else ("cs.RO", "cs.LG"))
        for i, p in enumerate(make_pool(20, fields=("robotics", "vision")))
    ]
    field = {p.paper_id: p.categories[0] for p in papers}
    liked = tuple(p for p in papers if p.categories == ("cs.CV",))[:4]
    scorer = TfidfScorer(method=method)  # type: ignore[arg-type]
    scorer.fit(papers)
    pool = Pool(papers)
    trending = np.linspace(1, 0, len(papers))

    def picked(reader: ReaderProfile) -> list[str]:
        picks = relevance.choose(pool, scorer.score(reader), trending, reader, k=10)
        return [field[p.paper_id] for p in picks]

    before = picked(ReaderProfile(weight=1.0))
    after = picked(ReaderProfile(liked=liked, weight=1.0))

    assert after.count("cs.CV") >= 9
    assert after.count("cs.CV") > before.count("cs.CV")
    words_only = [dataclasses.replace(p, categories=()) for p in papers]
    blind = TfidfScorer(method=method)  # type: ignore[arg-type]
    blind.fit(words_only)
    reader = ReaderProfile(
        liked=tuple(dataclasses.replace(p, categories=()) for p in liked), weight=1.0
    )
    picks = relevance.choose(Pool(words_only), blind.score(reader), trending, reader, k=10)
    assert [field[p.paper_id] for p in picks].count("cs.CV") < 9


def test_a_marked_paper_from_outside_the_pool_brings_its_field() -> None:
    """A liked paper usually predates the pool: its categories count as the pool's do."""
    papers = [
        dataclasses.replace(p, categories=("cs.CV",) if i % 2 else ("cs.RO",))
        for i, p in enumerate(make_pool(10, fields=("robotics", "vision")))
    ]
    earlier = Paper(paper_id="old", title="zzz qqq", abstract="xxx yyy", categories=("cs.CV",))
    scorer = TfidfScorer(method="profile")
    scorer.fit(papers)
    scores = scorer.score(ReaderProfile(liked=(earlier,))).scores
    cv = np.array([p.categories == ("cs.CV",) for p in papers])
    assert scores[cv].min() > scores[~cv].max()
