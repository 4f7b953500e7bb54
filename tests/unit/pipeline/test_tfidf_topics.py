"""Typed topics in the tf-idf scorer: many at once, the same as one at a time, remembered
within a bound (readers type their topics, so a list states thousands of them)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from papermail.pipeline import tfidf
from papermail.pipeline.relevance import EXPANSION_DOCS, EXPANSION_WEIGHT, Paper, ReaderProfile
from papermail.pipeline.tfidf import TfidfScorer
from tests.unit.pipeline.test_relevance import FIELDS, SHARED, fitted, make_pool

# Words of the pool's fields, alone and in pairs, and words no pool paper has.
TYPED = [
    *FIELDS["robotics"].split(),
    *(
        " ".join(pair)
        for pair in zip(FIELDS["vision"].split(), FIELDS["language"].split(), strict=True)
    ),
    "Encryption  ATTACK",
    "astrophysics",
    SHARED.split()[0],
]


def expected_topic_sims(scorer: TfidfScorer, pool: list[Paper], topic: str) -> np.ndarray:
    """The pool's similarity to a typed topic, one topic at a time, as docs/relevance.md
    states it: the topic's words, plus the normalised centroid of the EXPANSION_DOCS pool
    papers most like them (those with any likeness), the sum normalised."""
    matrix = scorer.encode(pool)
    query = scorer.encode([Paper(paper_id="", title="", abstract=topic)])
    own = (matrix @ query.T).toarray().ravel()
    best = np.argsort(-own, kind="stable")[:EXPANSION_DOCS]
    best = best[own[best] > 0]
    vector = query.toarray().ravel()
    if best.size:
        centroid = np.asarray(matrix[best].mean(axis=0)).ravel()
        vector = vector + EXPANSION_WEIGHT * centroid / np.linalg.norm(centroid)
        vector /= np.linalg.norm(vector)
    return np.asarray(matrix @ vector).ravel()


@pytest.mark.parametrize("method", ["svm", "profile"])
def test_topics_scored_together_are_each_topic_scored_alone(method: str) -> None:
    pool = make_pool(per_field=6)
    _pool, scorer = fitted(pool, method)
    readers = [ReaderProfile(topics=(topic,)) for topic in TYPED]
    together = scorer.score_many(readers)
    for i, topic in enumerate(TYPED):
        alone = scorer.score(ReaderProfile(topics=(topic,)))  # now from the memo
        expected = expected_topic_sims(scorer, pool, topic)
        assert np.allclose(together.scores[i], expected, rtol=0, atol=1e-12), topic
        assert alone.topic_sims is not None
        assert np.allclose(alone.topic_sims[0], expected, rtol=0, atol=1e-12), topic
    assert not together.scores[TYPED.index("astrophysics")].any()


def test_a_batchs_new_topics_are_vectorized_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # One at a time, a topic cost ~5 ms, mostly the vectorizer's own overhead a call.
    _pool, scorer = fitted(make_pool(per_field=6), "profile")
    calls: list[int] = []
    encode = scorer.encode

    def counting(papers: list[Paper]) -> sparse.csr_matrix:
        calls.append(len(papers))
        return encode(papers)

    monkeypatch.setattr(scorer, "encode", counting)
    # Each reader also types the first topic, in capitals: still the one topic.
    readers = [ReaderProfile(topics=(topic, f" {TYPED[0].upper()} ")) for topic in TYPED]
    scorer.score_many(readers)
    assert calls == [len(TYPED)]
    scorer.score_many(readers)
    assert calls == [len(TYPED)]  # remembered


def test_the_topic_memo_is_bounded_and_starting_over_changes_no_score(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = make_pool(per_field=5)
    _pool, unbounded = fitted(pool, "profile")
    expected = unbounded.score_many([ReaderProfile(topics=(t,)) for t in TYPED]).scores

    monkeypatch.setattr(tfidf, "TOPIC_CELLS", 3 * len(pool))  # three topics' rows
    _pool, bounded = fitted(pool, "profile")
    sizes = []
    for start in range(0, len(TYPED), 4):
        readers = [ReaderProfile(topics=(t,)) for t in TYPED[start : start + 4]]
        scores = bounded.score_many(readers).scores
        assert np.array_equal(scores, expected[start : start + 4])
        sizes.append(len(bounded._topic_sims))
    assert max(sizes) <= 3
    # Read again after starting over: the same rows.
    again = bounded.score_many([ReaderProfile(topics=(t,)) for t in TYPED]).scores
    assert np.array_equal(again, expected)
    assert len(bounded._topic_sims) <= 3
