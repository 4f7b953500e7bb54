"""Learned relevance: which of an edition's papers one reader wants, and why.

Pure domain (numpy, scikit-learn and its scipy.sparse; no database, no framework). The
flow, once per edition and then once per reader:

    pool = Pool(papers)                     # the edition's papers, in one fixed order
    scorer = TfidfScorer(); scorer.fit(pool.papers)   # pipeline/tfidf.py
    for reader in readers:                  # ~100k of them: everything below is matrix ops
        picks = choose(pool, scorer.score(reader), trending, reader, k=10)

A reader's relevance is learned from their feedback, the way arxiv-sanity-lite does it: a
per-reader linear SVM over tf-idf vectors, with the papers they liked ("More like this")
and one pseudo-document per stated topic as positives, and the papers they disliked
("Less like this") plus a sample of the pool as negatives. With no feedback yet (cold
start) there is nothing to learn from, so relevance is the similarity to the reader's
topics, each topic expanded with the pool papers that match it best (pseudo-relevance
feedback, so "robotics" also finds papers that only say "robot" and "grasping").
``method="profile"`` swaps the SVM for a closed-form Rocchio profile (cheaper, see
docs/relevance.md). The per-reader ranking then blends relevance with trending at the
reader's own "trending vs. for me" weight.

Anything that turns text into vectors can replace tf-idf (a local sentence-embedding
model, say): implement :class:`Scorer`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from papermail.pipeline.blending import DEFAULT_WEIGHT, Trending, Vector, top_scaled

EXPANSION_DOCS = 10  # pool papers folded into a topic's pseudo-document
EXPANSION_WEIGHT = 0.5  # their centroid's weight beside the topic's own words
NEGATIVES = 200  # unlabeled pool papers a reader's SVM treats as "probably not for me"
SVM_C = 0.05  # a handful of examples, 10^5 features: a strongly regularised model
DISLIKE_WEIGHT = 3.0  # an explicit "Less like this" outweighs an unlabeled negative
# The profile method: weights of the best topic, the liked centroid, the disliked one.
ROCCHIO = (1.0, 1.0, 0.5)


@dataclass(frozen=True, slots=True)
class Paper:
    """What relevance reads of a paper: its words, and who wrote it (for follows and mutes)."""

    paper_id: str
    title: str
    abstract: str = ""
    keywords: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    organization: str | None = None

    @property
    def text(self) -> str:
        # The title twice: it is the densest statement of what a paper is about.
        return " \n".join((self.title, self.title, " · ".join(self.keywords), self.abstract))


@dataclass(frozen=True, slots=True)
class ReaderProfile:
    """One reader's stated interests, their feedback so far, and their blend setting."""

    topics: tuple[str, ...] = ()
    follow_organizations: tuple[str, ...] = ()
    follow_authors: tuple[str, ...] = ()
    liked: tuple[Paper, ...] = ()  # "More like this", oldest first
    disliked: tuple[Paper, ...] = ()  # "Less like this"
    muted_authors: tuple[str, ...] = ()
    muted_organizations: tuple[str, ...] = ()
    weight: float = DEFAULT_WEIGHT  # trending (0) .. for me (1)

    @property
    def has_feedback(self) -> bool:
        return bool(self.liked or self.disliked)


@dataclass(frozen=True, slots=True)
class Relevance:
    """One reader's scores over the fitted pool (same order), and what explains them.

    ``topic_sims[t]`` and ``liked_sims[j]`` are cosine similarities of every pool paper
    to topic t's pseudo-document and to liked paper j. The why-lines are read from these.
    """

    scores: Vector
    topics: tuple[str, ...] = ()
    topic_sims: Vector | None = None  # (topics, pool)
    liked: tuple[Paper, ...] = ()
    liked_sims: Vector | None = None  # (liked, pool)


class Scorer(Protocol):
    """Fit once per pool (an edition's papers), then score the pool for any reader."""

    def fit(self, papers: Sequence[Paper]) -> None: ...

    def score(self, reader: ReaderProfile) -> Relevance: ...


# --- follows and mutes, choosing, evidence (the blend itself: blending.py) ----------------


def _name_key(name: str) -> str:
    # How a person's or an organisation's name is compared: case and spacing do not matter.
    return " ".join(name.split()).casefold()


@functools.lru_cache(maxsize=4096)  # bounded: the terms are whatever readers typed
def _whole_words(term: str) -> re.Pattern[str]:
    # The same rule as ranking.select: following "Meta" must not pull in "Metaculus".
    words = r"\s+".join(re.escape(w) for w in term.split())
    return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)


class Pool:
    """An edition's papers in scoring order, indexed by author and organisation.

    Built once per edition, so a reader's follows and mutes are dictionary lookups
    rather than a scan of every paper's author list.
    """

    def __init__(self, papers: Sequence[Paper]) -> None:
        self.papers = tuple(papers)
        self.ids = tuple(p.paper_id for p in self.papers)
        self.texts = tuple(p.text for p in self.papers)
        self._says: dict[tuple[str, int], bool] = {}
        self._rows = {pid: i for i, pid in enumerate(self.ids)}
        self._by_author: dict[str, list[tuple[int, str]]] = {}
        self._by_org: dict[str, list[int]] = {}
        self._org_terms: dict[str, dict[int, str]] = {}  # term -> matches, asked again and again
        self._by_org_key: dict[str, list[int]] = {}
        for i, paper in enumerate(self.papers):
            for author in paper.authors:
                self._by_author.setdefault(_name_key(author), []).append((i, author))
            if paper.organization:
                self._by_org.setdefault(paper.organization, []).append(i)
                self._by_org_key.setdefault(_name_key(paper.organization), []).append(i)

    def __len__(self) -> int:
        return len(self.papers)

    def says(self, term: str, row: int) -> bool:
        """Whether paper ``row`` contains ``term``'s words as typed (whole words, any case);
        remembered: many readers share a topic, and a pool's papers are few."""
        key = (" ".join(term.casefold().split()), row)
        if (found := self._says.get(key)) is None:
            if len(self._says) >= 200_000:  # free-typed topics: bound what is remembered
                self._says.clear()
            found = self._says[key] = _whole_words(key[0]).search(self.texts[row]) is not None
        return found

    def row(self, paper_id: str) -> int | None:
        return self._rows.get(paper_id)

    def by_authors(self, names: Iterable[str]) -> dict[int, str]:
        """{row: the author's name as the paper spells it} for papers by any of ``names``."""
        found: dict[int, str] = {}
        for name in names:
            for row, spelled in self._by_author.get(_name_key(name), ()):
                found.setdefault(row, spelled)
        return found

    def by_organization_names(self, names: Iterable[str]) -> set[int]:
        """Rows whose organisation is exactly one of ``names`` (case and spacing aside).

        The rule for mutes, as ranking.Muted has it: a mute comes from a card, so it names
        the organisation exactly, and muting "Meta AI" must not silence "Meta".
        """
        return {row for name in names for row in self._by_org_key.get(_name_key(name), ())}

    def by_organizations(self, terms: Iterable[str]) -> dict[int, str]:
        """{row: organisation} for papers whose organisation names any term as whole words.

        The rule for follows, as ranking.select has it: following "DeepMind" finds "Google
        DeepMind", and following "Meta" does not find "Metaculus".
        """
        found: dict[int, str] = {}
        for term in terms:
            key = " ".join(term.casefold().split())
            if not key:
                continue
            if (matches := self._org_terms.get(key)) is None:
                pattern = _whole_words(key)
                matches = {
                    row: org
                    for org, rows in self._by_org.items()
                    if pattern.search(org)
                    for row in rows
                }
                self._org_terms[key] = matches
            for row, org in matches.items():
                found.setdefault(row, org)
        return found


@dataclass(frozen=True, slots=True)
class Pick:
    paper_id: str
    score: float
    evidence: Literal["followed", "liked", "topic", "trending"]
    reason: str  # the why-line under the card


def choose(
    pool: Pool,
    relevance: Relevance,
    trending: Vector | Trending,
    reader: ReaderProfile,
    *,
    k: int = 10,
    exclude: Iterable[str] = (),
) -> list[Pick]:
    """A reader's top ``k``: relevance blended with trending at their weight, with reasons.

    Followed organisations and authors come first (as in ranking.select), muted ones,
    papers the reader marked (liked or disliked: they have seen them) and the ids in
    ``exclude`` (say, papers already sent to them) never appear. ``trending`` is any
    popularity score in pool order (higher = more trending).
    """
    n = len(pool)
    trend = trending if isinstance(trending, Trending) else Trending.of(trending)
    if len(relevance.scores) != n or len(trend.values) != n:
        raise ValueError("relevance, trending and the pool must be in the same order")
    if n == 0 or k <= 0:
        return []
    weight = reader.weight
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], not {weight}")
    trend_unit = trend.unit
    rel_unit = top_scaled(relevance.scores, k)
    mixed = (1.0 - weight) * trend_unit + weight * rel_unit  # blend(), parts kept for _why

    followed = {
        row: f"From {org}, which you follow"
        for row, org in pool.by_organizations(reader.follow_organizations).items()
    }
    for row, name in pool.by_authors(reader.follow_authors).items():
        followed.setdefault(row, f"By {name}, whom you follow")
    if followed and weight > 0:
        # Above anything unfollowed (at most 1), as in ranking.select; pure trending
        # (weight 0) is the same list as everyone's, follows included.
        mixed[list(followed)] += 1.0 + 1e-9
    blocked = set(pool.by_authors(reader.muted_authors))
    blocked |= pool.by_organization_names(reader.muted_organizations)
    # A paper the reader marked, either way, has reached them already: never again.
    marked = (*reader.disliked, *reader.liked)
    blocked |= {r for p in marked if (r := pool.row(p.paper_id)) is not None}
    blocked |= {r for pid in exclude if (r := pool.row(pid)) is not None}
    if blocked:
        mixed[list(blocked)] = -np.inf

    # Ties (the reader's best k all score 1 at weight 1): the side the reader leans to.
    scores = relevance.scores
    first, second = (scores, trend.values) if weight >= 0.5 else (trend.values, scores)
    rows = _top(mixed, first, second, k)
    # Each pick's best liked paper and best topic, for all picks in one call each.
    liked = _best(relevance.liked_sims, rows)
    topic = _best(relevance.topic_sims, rows)
    picks = []
    for i, row in enumerate(rows):
        evidence, reason = _why(
            row,
            says=pool.says,
            relevance=relevance,
            trending=trend,
            followed=followed,
            rel_part=weight * rel_unit[row],
            trend_part=(1.0 - weight) * trend_unit[row],
            best_liked=(liked[0][i], liked[1][i]) if liked else (0.0, None),
            best_topic=(topic[0][i], topic[1][i]) if topic else (0.0, None),
        )
        picks.append(Pick(pool.ids[row], float(mixed[row]), evidence, reason))
    return picks


def _top(mixed: Vector, first: Vector, second: Vector, k: int) -> list[int]:
    """The best ``k`` rows by ``mixed``, ties by ``first``, ``second``, then pool order.

    Blocked rows (-inf) never appear. A partial sort: only rows at or above the k-th
    value are ordered, so a reader costs O(pool), not O(pool log pool).
    """
    allowed = np.flatnonzero(np.isfinite(mixed))
    if allowed.size == 0:
        return []
    values = mixed[allowed]
    kth = values.size - min(k, values.size)
    near = allowed[values >= np.partition(values, kth)[kth]]
    order = np.lexsort((near, -second[near], -first[near], -mixed[near]))
    return [int(r) for r in near[order][:k]]


def _why(
    row: int,
    *,
    says: Callable[[str, int], bool],
    relevance: Relevance,
    trending: Trending,
    followed: dict[int, str],
    rel_part: float,
    trend_part: float,
    best_liked: tuple[float, int | None],
    best_topic: tuple[float, int | None],
) -> tuple[Literal["followed", "liked", "topic", "trending"], str]:
    """The strongest piece of evidence for one pick, in the words the email shows;
    ``best_*``: the most similar liked paper and topic (similarity, index)."""
    if row in followed:
        return "followed", followed[row]
    if rel_part >= trend_part:
        (liked_sim, liked_at), (topic_sim, topic_at) = best_liked, best_topic
        if liked_at is not None and liked_sim > 0 and liked_sim >= topic_sim:
            title = relevance.liked[liked_at].title
            return "liked", f"Similar to \u201c{title}\u201d, which you liked"
        if topic_at is not None and topic_sim > 0:
            topic = relevance.topics[topic_at]
            # "Matches" only when the paper says the topic's words as the reader typed them
            # (ranking.select's rule); similar vocabulary alone is "related".
            verb = "Matches your topic" if says(topic, row) else "Related to your topic"
            return "topic", f"{verb} \u201c{topic}\u201d"
    # 1-based position in the trending order (ties by pool order, as _top breaks them).
    return "trending", f"#{int(trending.ranks[row])} trending"


def _best(sims: Vector | None, rows: list[int]) -> tuple[list[float], list[int]] | None:
    """For each row, the largest similarity in its column and which line holds it."""
    if sims is None or sims.shape[0] == 0 or not rows:
        return None
    block = sims[:, rows]
    at = np.argmax(block, axis=0)
    return block[at, np.arange(len(rows))].tolist(), at.tolist()
