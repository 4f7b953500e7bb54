"""What one reader costs: scoring a 2,000-paper pool, cold and with feedback.

Planning scores every due reader against the edition's pool, so the figure that matters
is the per-reader time once the pool is fitted. Readers are drawn as in the replay; those
"with feedback" have liked 10 and disliked 5 papers from outside the pool (earlier days),
different papers for different readers, so the per-paper cache warms up as it would in
production rather than serving one reader's papers over and over.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from papermail.pipeline import relevance
from papermail.pipeline.relevance import Paper, ReaderProfile
from papermail.pipeline.tfidf import TfidfScorer
from papermail_dev.evaluate import popularity, readers
from papermail_dev.evaluate.corpus import CorpusPaper, primaries

LIKED, DISLIKED = 10, 5


def measure(
    corpus: Sequence[CorpusPaper],
    *,
    pool_size: int = 2000,
    readers_n: int = 400,
    seed: int = 0,
    categories: bool = True,
) -> dict[str, Any]:
    """Per-reader timings; ``categories`` False: the papers as words only."""

    def seen(paper: CorpusPaper) -> Paper:
        return paper.paper if categories else paper.words_only

    ordered = sorted(corpus, key=lambda p: (p.listed, p.id))
    inside, history = ordered[:pool_size], ordered[pool_size:] or ordered
    counts = primaries(ordered)
    fields = readers.eligible_categories(counts, editions=1, per_edition=5)
    population = readers.draw_readers(
        readers_n, counts=counts, categories=fields or sorted(counts), corpus=ordered, seed=seed
    )
    votes = popularity.upvotes(inside, field_counts=counts, seed=seed)
    trending = np.array([float(votes[p.id]) for p in inside])
    pool = relevance.Pool([seen(p) for p in inside])

    fits = []
    for _ in range(3):
        scorer = TfidfScorer(seed=seed)
        started = time.perf_counter()
        scorer.fit(pool.papers)
        fits.append(time.perf_counter() - started)

    rng = np.random.default_rng(seed)
    cold = [ReaderProfile(topics=r.topics) for r in population]
    warm = []
    for reader in population:
        mine = [p for p in history if reader.wants(p)] or list(history)
        other = [p for p in history if not reader.wants(p)] or list(history)
        liked = rng.choice(len(mine), min(LIKED, len(mine)), replace=False)
        disliked = rng.choice(len(other), min(DISLIKED, len(other)), replace=False)
        warm.append(
            ReaderProfile(
                topics=reader.topics,
                liked=tuple(seen(mine[i]) for i in liked),
                disliked=tuple(seen(other[i]) for i in disliked),
            )
        )

    result: dict[str, Any] = {
        "pool": len(inside),
        "features": scorer.features,
        "readers": len(population),
        "fit_pool_ms": round(1000 * statistics.median(fits), 1),
    }
    result["first_sight"] = _first_sight(pool, population, [seen(p) for p in history[:200]], seed)
    for method in ("svm", "profile"):
        scorer.method = method
        for name, profiles in (("cold_start", cold), ("feedback", warm)):
            if name == "cold_start" and method == "profile":
                continue  # the same code path: no feedback, nothing to learn
            label = name if name == "cold_start" else f"{name}_{method}"
            result[label] = _time(pool, scorer, trending, profiles)
    return result


def _first_sight(
    pool: relevance.Pool,
    population: Sequence[readers.SimReader],
    history: Sequence[Paper],
    seed: int,
) -> dict[str, float]:
    """What the caches save: a topic's expansion, and a rated paper's vector, the first time.

    Paid once per distinct topic and per distinct rated paper per edition, whoever asks.
    """
    scorer = TfidfScorer(method="profile", seed=seed)
    scorer.fit(pool.papers)
    topics = sorted({t for r in population for t in r.topics})
    topic_ms = []
    for topic in topics:
        started = time.perf_counter()
        scorer.score(ReaderProfile(topics=(topic,)))
        topic_ms.append(1000 * (time.perf_counter() - started))
    paper_ms = []
    for paper in history:
        started = time.perf_counter()
        scorer.score(ReaderProfile(liked=(paper,)))
        paper_ms.append(1000 * (time.perf_counter() - started))
    return {
        "topics": len(topics),
        "topic_median_ms": round(statistics.median(topic_ms), 3),
        "rated_paper_median_ms": round(statistics.median(paper_ms), 3),
    }


def _time(
    pool: relevance.Pool,
    scorer: TfidfScorer,
    trending: np.ndarray,
    profiles: Sequence[ReaderProfile],
) -> dict[str, float]:
    score_ms: list[float] = []
    total_ms: list[float] = []
    clock: Callable[[], float] = time.perf_counter
    for profile in profiles:
        started = clock()
        scored = scorer.score(profile)
        scored_at = clock()
        relevance.choose(pool, scored, trending, profile, k=10)
        done = clock()
        score_ms.append(1000 * (scored_at - started))
        total_ms.append(1000 * (done - started))
    return {
        "score_median_ms": round(statistics.median(score_ms), 3),
        "score_and_choose_median_ms": round(statistics.median(total_ms), 3),
        "score_and_choose_p90_ms": round(float(np.percentile(total_ms, 90)), 3),
    }
