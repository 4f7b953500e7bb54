"""Marked papers' similarity rows in a planning run: bounded by cells, so a large pool keeps
fewer of them; a batch that marks more than are kept scores as if all were."""

from __future__ import annotations

import numpy as np
import pytest

from papermail.pipeline import batch_scoring
from papermail.pipeline.batch_scoring import RATED_AT_LEAST, RATED_LIMIT, RatedPapers
from papermail.pipeline.relevance import ReaderProfile
from tests.unit.pipeline.test_relevance import fitted, make_pool


def test_the_rows_kept_are_bounded_by_cells_as_well_as_by_count() -> None:
    assert RatedPapers(40).limit == RATED_LIMIT  # the sample's day: the count decides
    assert RatedPapers(1_000).limit == 4_096  # the default edition size: 32 MB of rows
    assert RatedPapers(10_000).limit == 419  # the largest Settings allow: still 32 MB
    assert RatedPapers(10**7).limit == RATED_AT_LEAST


@pytest.mark.parametrize("method", ["profile", "svm"])
def test_a_batch_that_marked_more_papers_than_are_kept_scores_as_if_all_were(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool(per_field=5)
    earlier = make_pool(per_field=6, seed=9)  # 24 papers from earlier emails
    readers = [
        ReaderProfile(
            topics=("robot",),
            liked=tuple(earlier[i : i + 4]),
            disliked=(earlier[(i + 7) % len(earlier)],),
        )
        for i in range(len(earlier))
    ]
    _pool, everything = fitted(pool, method)
    expected = everything.score_many(readers).scores

    monkeypatch.setattr(batch_scoring, "RATED_AT_LEAST", 1)
    monkeypatch.setattr(batch_scoring, "RATED_CELLS", 6 * len(pool))  # six papers' rows
    _pool, bounded = fitted(pool, method)
    assert bounded._rated.limit == 6

    scored = bounded.score_many(readers)
    assert np.allclose(scored.scores, expected, rtol=0, atol=1e-12)
    assert len(bounded._rated.titles) <= 6
    for i, reader in enumerate(readers):  # each reader's evidence: their own liked papers
        titles = {scored.liked_titles[r] for r in scored.liked_rows[i]}
        assert titles == {p.title for p in reader.liked}
