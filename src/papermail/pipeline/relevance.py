"""Learned relevance: which of an edition's papers one reader wants, and why.

Pure domain (numpy, scikit-learn and its scipy.sparse; no database, no framework). The
flow, once per edition and then once per reader:

    pool = Pool(papers)                     # the edition's papers, in one fixed order
    scorer = planning_scorer(); scorer.fit(pool.papers)   # pipeline/tfidf.py
    for reader in readers:                  # ~100k of them: everything below is matrix ops
        picks = choose(pool, scorer.score(reader), trending, reader, k=10)

A reader's relevance is learned from their feedback. Planning uses a closed-form Rocchio
profile over tf-idf vectors (``method="profile"``, picking.planning_scorer): the best
stated topic, plus the similarity to the papers they liked ("More like this"), less half
the similarity to those they disliked ("Less like this"). ``method="svm"`` is
arxiv-sanity-lite's way instead: a linear SVM per reader, the liked papers and the topics
as positives, the disliked ones and a sample of the pool as negatives; a few points more
precise on our evaluation and ~5x the cost (docs/relevance.md). With no feedback yet
(cold start) there is nothing to learn from, so relevance is the similarity to the
reader's topics, each topic expanded with the pool papers that match it best
(pseudo-relevance feedback, so "robotics" also finds papers that only say "robot" and
"grasping"). The per-reader ranking then blends relevance with trending at the reader's
own "trending vs. for me" weight.

Anything that turns text into vectors can replace tf-idf (a local sentence-embedding
model, say): implement :class:`Scorer`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from papermail.pipeline import choosing
from papermail.pipeline.blending import DEFAULT_WEIGHT, Trending, Vector

EXPANSION_DOCS = 10  # pool papers folded into a topic's pseudo-document
EXPANSION_WEIGHT = 0.5  # their centroid's weight beside the topic's own words
NEGATIVES = 200  # unlabeled pool papers a reader's SVM treats as "probably not for me"
SVM_C = 0.05  # a handful of examples, 10^5 features: a strongly regularised model
DISLIKE_WEIGHT = 3.0  # an explicit "Less like this" outweighs an unlabeled negative
# The profile method: weights of the best topic, the liked centroid, the disliked one.
ROCCHIO = (1.0, 1.0, 0.5)
# Organisation names a pool remembers the matches of; readers type them, so start over
# when full (most are asked again and again: "Meta AI", "Google DeepMind").
ORG_TERMS_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Paper:
    """What relevance reads of a paper: its words, and who wrote it (for follows and mutes)."""

    paper_id: str
    title: str
    abstract: str = ""
    keywords: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    organization: str | None = None
    # arXiv's, primary first; none for a paper arXiv has not described (category_features)
    categories: tuple[str, ...] = ()

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
    """Fit once per pool (an edition's papers), then score the pool for any readers:
    ``score_many`` for a batch (planning), ``score`` for one (a batch of one)."""

    def fit(self, papers: Sequence[Paper]) -> None: ...

    def score(self, reader: ReaderProfile) -> Relevance: ...

    def score_many(self, readers: Sequence[ReaderProfile]) -> choosing.Relevances: ...


# --- follows and mutes, choosing (the blend: blending.py; many readers: choosing.py) ------


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

    def followed(self, reader: ReaderProfile) -> dict[int, str]:
        """{row: why-line} for papers from organisations and authors the reader follows."""
        found = {
            row: f"From {org}, which you follow"
            for row, org in self.by_organizations(reader.follow_organizations).items()
        }
        for row, name in self.by_authors(reader.follow_authors).items():
            found.setdefault(row, f"By {name}, whom you follow")
        return found

    def blocked(self, reader: ReaderProfile) -> set[int]:
        """Rows the reader never gets: muted authors and organisations, and papers they
        marked either way (a marked paper has reached them already)."""
        rows = {r for p in reader.liked if (r := self._rows.get(p.paper_id)) is not None}
        rows.update(r for p in reader.disliked if (r := self._rows.get(p.paper_id)) is not None)
        if reader.muted_authors:
            rows.update(self.by_authors(reader.muted_authors))
        if reader.muted_organizations:
            rows |= self.by_organization_names(reader.muted_organizations)
        return rows

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
                if len(self._org_terms) >= ORG_TERMS_REMEMBERED:
                    self._org_terms.clear()
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
    popularity score in pool order (higher = more trending). A batch of one of
    choosing.choose_many, which planning calls for thousands of readers at once.
    """
    trend = trending if isinstance(trending, Trending) else Trending.of(trending)
    n = len(pool)
    if len(relevance.scores) != n or len(trend.values) != n:
        raise ValueError("relevance, trending and the pool must be in the same order")
    if not 0.0 <= reader.weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], not {reader.weight}")
    one = choosing.Reader(
        weight=reader.weight,
        k=k,
        followed=pool.followed(reader),
        blocked=pool.blocked(reader) | {r for pid in exclude if (r := pool.row(pid)) is not None},
    )
    chosen = choosing.choose_many(as_batch(relevance), trend, [one], ids=pool.ids, says=pool.says)
    return [
        Pick(pool.ids[row], score, evidence, reason)
        for row, score, evidence, reason in zip(
            chosen.rows, chosen.scores, chosen.evidence, chosen.reasons, strict=True
        )
    ]


def as_batch(relevance: Relevance) -> choosing.Relevances:
    """One reader's relevance as a batch of one."""
    n = len(relevance.scores)
    topics = relevance.topic_sims if relevance.topic_sims is not None else np.zeros((0, n))
    liked = relevance.liked_sims if relevance.liked_sims is not None else np.zeros((0, n))
    return choosing.Relevances(
        scores=np.asarray(relevance.scores, dtype=np.float64).reshape(1, n),
        topic_matrix=topics,
        topic_names=relevance.topics,
        topic_rows=[np.arange(topics.shape[0], dtype=np.intp)],
        liked_matrix=liked,
        liked_titles=[p.title for p in relevance.liked],
        liked_rows=[np.arange(liked.shape[0], dtype=np.intp)],
    )
