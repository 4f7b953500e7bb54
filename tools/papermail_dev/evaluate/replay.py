"""The replay: editions day by day, three systems, one precision@k curve each.

Every simulated reader gets, each day, the top k of that day's papers from

* **papermail**: what planning would pick for them (``picking.EditionPicker`` with
  planning's scorer, unless ``--method`` names one): learned relevance with the feedback
  they gave so far, blended with trending at the default "trending vs. for me" weight;
* **topic-match**: today's papermail selection (``ranking.select``: whole-word topic
  matches in trending order, then trending);
* **trending**: the same list for everyone, the simulated popularity order.

A paper is relevant when its primary category is one of the reader's hidden interests.
Readers click only on papermail's email (the baselines learn nothing from clicks), so
papermail's curve shows what feedback buys and the others stay flat but for the day's mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.svm import LinearSVC

from papermail.pipeline import ranking, relevance
from papermail.pipeline.picking import Ask, EditionPicker, PoolPaper, planning_scorer
from papermail.pipeline.relevance import Paper, ReaderProfile
from papermail.pipeline.tfidf import TfidfScorer
from papermail_dev.evaluate import popularity, readers
from papermail_dev.evaluate.corpus import CorpusPaper, Edition, editions, primaries

SYSTEMS = ("papermail", "topic_match", "trending")


@dataclass(frozen=True, slots=True)
class EvalConfig:
    days: int | None = None  # the first N editions (None: all)
    readers: int = 300
    seed: int = 0
    k: int = 10
    weight: float = relevance.DEFAULT_WEIGHT
    p_like: float = 0.3
    p_dislike: float = 0.1
    # None: the scorer planning uses (picking.planning_scorer), so the curve is the product's.
    method: Literal["svm", "profile"] | None = None
    # A field needs this many papers per edition on average to be someone's interest.
    per_edition: float = 2.0
    checkpoint: int = 6  # "after five days of feedback": the sixth edition
    # Also the "supervised" reference: an SVM per reader trained on every earlier paper's
    # true label. No reader gives that much feedback; it bounds what tf-idf can learn.
    supervised: bool = False
    # papermail sees the papers' arXiv categories; False: words only, as for a Hugging Face
    # paper the arXiv ingest has not described.
    categories: bool = True

    def seen(self, paper: CorpusPaper) -> Paper:
        return paper.paper if self.categories else paper.words_only


@dataclass(slots=True)
class _State:
    reader: readers.SimReader
    liked: list[Paper] = field(default_factory=list)
    disliked: list[Paper] = field(default_factory=list)

    def profile(self, weight: float) -> ReaderProfile:
        return ReaderProfile(
            topics=self.reader.topics,
            liked=tuple(self.liked),
            disliked=tuple(self.disliked),
            weight=weight,
        )


def evaluate(corpus: Sequence[CorpusPaper], config: EvalConfig) -> dict[str, Any]:
    """Replay ``corpus``; the report as plain data (what --out writes as JSON)."""
    started = time.perf_counter()
    days = editions(corpus, min_papers=config.k)
    if config.days is not None:
        days = days[: config.days]
    if not days:
        raise ValueError(f"no listing day has {config.k} papers")
    shown_corpus = [p for e in days for p in e.papers]
    counts = primaries(shown_corpus)
    fields = readers.eligible_categories(counts, editions=len(days), per_edition=config.per_edition)
    population = readers.draw_readers(
        config.readers, counts=counts, categories=fields, corpus=shown_corpus, seed=config.seed
    )
    votes = popularity.upvotes(shown_corpus, field_counts=counts, seed=config.seed)
    clicks = readers.Clicks(p_like=config.p_like, p_dislike=config.p_dislike)
    states = [_State(r) for r in population]

    method = _scorer(config).method
    per_day = []
    for number, edition in enumerate(days, 1):
        earlier = [p for e in days[: number - 1] for p in e.papers]
        per_day.append(_replay_day(number, edition, states, votes, clicks, config, earlier))
    return {
        "parameters": {
            **asdict(config),
            "method": method,
            "editions": len(days),
            "papers": len(shown_corpus),
        },
        "simulation": {
            "fields": fields,
            "readers_per_field": _readers_per_field(population),
            "interests_per_reader": float(np.mean([len(r.interests) for r in population])),
            "topics_per_reader": float(np.mean([len(r.topics) for r in population])),
            "popularity": {
                "median_votes": popularity.MEDIAN_VOTES,
                "field_gain": popularity.FIELD_GAIN,
                "team_gain": popularity.TEAM_GAIN,
                "sigma": popularity.SIGMA,
            },
        },
        "days": per_day,
        "summary": summarise(per_day, checkpoint=config.checkpoint),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _replay_day(
    number: int,
    edition: Edition,
    states: list[_State],
    votes: dict[str, int],
    clicks: readers.Clicks,
    config: EvalConfig,
    earlier: Sequence[CorpusPaper],
) -> dict[str, Any]:
    papers = edition.papers
    by_id = {p.id: p for p in papers}
    order = popularity.trending(papers, votes, day=edition.day)
    trend_rank = {s.paper_id: i for i, s in enumerate(order, 1)}
    # papermail's view of the edition: its papers with their trending scores, picked
    # from as planning picks (picking.EditionPicker), in one batch of every reader.
    score_of = {s.paper_id: s.score for s in order}
    scorer = _scorer(config)
    picker = EditionPicker(
        [
            PoolPaper(
                paper=paper,
                trending=score_of[paper.paper_id],
                upvotes=votes[paper.paper_id],
                categories=paper.categories,
            )
            for paper in map(config.seen, papers)
        ],
        scorer=scorer,
    )
    chosen = picker.pick_many([Ask(s.profile(config.weight), k=config.k) for s in states])
    # The baselines' view: ranked candidates for ranking.select.
    candidates = [
        ranking.Candidate(
            paper_id=p.id,
            rank=trend_rank[p.id],
            title=p.title,
            summary=p.abstract,
            keywords=(),
            organization=None,
            authors=p.authors,
        )
        for p in papers
    ]
    index = ranking.TopicIndex(candidates)
    everyone = [by_id[s.paper_id] for s in order[: config.k]]

    hits: dict[str, list[float]] = {name: [] for name in (*SYSTEMS, "ceiling")}
    supervised = (
        _Supervised(scorer, earlier, papers, config.seen) if config.supervised and earlier else None
    )
    likes = dislikes = 0
    top_trending = {p.id for p in everyone}
    trending_kept: list[int] = []
    for state, picks in zip(states, chosen, strict=True):
        reader = state.reader
        mine = [by_id[paper_id] for paper_id, _why in picks]
        interests = ranking.Interests(max_papers=config.k, topics=reader.topics)
        matched = [by_id[pid] for pid, _ in ranking.select(candidates, interests, index=index)]
        relevant_today = sum(reader.wants(p) for p in papers)
        for name, shown in (("papermail", mine), ("topic_match", matched), ("trending", everyone)):
            hits[name].append(sum(reader.wants(p) for p in shown) / config.k)
        hits["ceiling"].append(min(config.k, relevant_today) / config.k)
        # How much of the day's trending list papermail's email still carries: the blend's
        # other half, which precision alone would rather see gone.
        trending_kept.append(len(top_trending.intersection(p.id for p in mine)))
        if supervised is not None:
            shown = supervised.top(reader, config.k)
            hits.setdefault("supervised", []).append(sum(map(reader.wants, shown)) / config.k)
        # The reader reads papermail's email and clicks as a person would.
        rng = np.random.default_rng([config.seed, reader.number, number, 7])
        liked, disliked = clicks.react(reader, mine, rng)
        state.liked.extend(map(config.seen, liked))
        state.disliked.extend(map(config.seen, disliked))
        likes += len(liked)
        dislikes += len(disliked)
    return {
        "day": edition.day,
        "edition": number,
        "papers": len(papers),
        **{name: round(float(np.mean(v)), 4) for name, v in hits.items()},
        "trending_kept": round(float(np.mean(trending_kept)), 2),
        "likes": likes,
        "dislikes": dislikes,
        "feedback_per_reader": round(
            float(np.mean([len(s.liked) + len(s.disliked) for s in states])), 2
        ),
    }


def _scorer(config: EvalConfig) -> TfidfScorer:
    if config.method is None:
        return planning_scorer()
    return TfidfScorer(method=config.method, seed=config.seed)


class _Supervised:
    """A reference, not a system: a linear SVM trained on every earlier paper's true label."""

    def __init__(
        self,
        scorer: TfidfScorer,
        earlier: Sequence[CorpusPaper],
        today: Sequence[CorpusPaper],
        seen: Callable[[CorpusPaper], Paper],
    ) -> None:
        self.earlier = earlier
        self.today = today
        self.train = scorer.encode([seen(p) for p in earlier])
        self.pool = scorer.encode([seen(p) for p in today])

    def top(self, reader: readers.SimReader, k: int) -> list[CorpusPaper]:
        labels = np.array([reader.wants(p) for p in self.earlier])
        if labels.all() or not labels.any():
            return list(self.today[:k])
        model = LinearSVC(C=0.5, class_weight="balanced", dual="auto", random_state=0)
        model.fit(self.train, labels)
        scores = np.asarray(self.pool @ model.coef_.ravel()).ravel()
        return [self.today[i] for i in np.argsort(-scores, kind="stable")[:k]]


def summarise(per_day: list[dict[str, Any]], *, checkpoint: int) -> dict[str, Any]:
    """The checkpoint edition ("after five days of feedback") and the ratios there.

    A corpus with fewer editions is judged on its last one, and says so.
    """
    at = min(checkpoint, len(per_day))
    row = per_day[at - 1]
    later = per_day[at - 1 :]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b > 0 else None

    means = {name: round(float(np.mean([r[name] for r in later])), 4) for name in SYSTEMS}
    return {
        "checkpoint_edition": at,
        "feedback_days_before_it": at - 1,
        "checkpoint_day": row["day"],
        "at_checkpoint": {name: row[name] for name in SYSTEMS},
        "from_checkpoint_on": means,
        "papermail_over_topic_match": ratio(row["papermail"], row["topic_match"]),
        "papermail_over_trending": ratio(row["papermail"], row["trending"]),
        "mean_over_all_days": {
            name: round(float(np.mean([r[name] for r in per_day])), 4) for name in SYSTEMS
        },
    }


def _readers_per_field(population: Sequence[readers.SimReader]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reader in population:
        for category in reader.interests:
            counts[category] = counts.get(category, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
