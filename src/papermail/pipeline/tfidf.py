"""The default relevance scorer: tf-idf vectors and a per-reader linear model.

See pipeline/relevance.py for the flow and the Scorer protocol this implements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from papermail.pipeline.relevance import (
    DISLIKE_WEIGHT,
    EXPANSION_DOCS,
    EXPANSION_WEIGHT,
    NEGATIVES,
    ROCCHIO,
    SVM_C,
    Paper,
    ReaderProfile,
    Relevance,
    Vector,
)

GRAM_LIMIT = 3_000  # pools up to this size keep their pairwise similarities dense
OUTSIDE_LIMIT = 3_000  # rated papers from outside the pool whose dots are kept (72 MB)


@dataclass(frozen=True, slots=True)
class _Topic:
    vector: sparse.csr_matrix  # the pseudo-document, L2-normalised (1, features)
    sims: Vector  # the pool's similarity to it


class TfidfScorer:
    """tf-idf over title + keywords + abstract; a linear SVM (or Rocchio profile) per reader.

    What many readers share is computed once per pool and cached: each distinct topic's
    pseudo-document and each liked/disliked paper's vector and similarities. So a
    cold-start reader costs a few column lookups, and one with feedback a small SVM fit
    (a few hundred rows) plus one sparse matrix-vector product over the pool.
    """

    def __init__(
        self,
        *,
        method: Literal["svm", "profile"] = "svm",
        negatives: int = NEGATIVES,
        c: float = SVM_C,
        seed: int = 0,
    ) -> None:
        self.method = method
        self.negatives = negatives
        self.c = c
        self.seed = seed
        self._vectorizer: TfidfVectorizer | None = None
        self._matrix: sparse.csr_matrix | None = None
        self._rows: dict[str, int] = {}
        self._negative_rows: NDArray[np.intp] = np.empty(0, dtype=np.intp)
        self._topics: dict[str, _Topic] = {}
        self._papers: dict[str, tuple[sparse.csr_matrix, Vector]] = {}
        self._gram: Vector | None = None  # the pool's pairwise similarities, when small
        self._outside = _OutsideGram()

    def fit(self, papers: Sequence[Paper]) -> None:
        self._vectorizer = TfidfVectorizer(
            sublinear_tf=True,  # the tenth "robot" says less than the first
            stop_words="english",
            ngram_range=(1, 2),  # "language model", "point cloud"
            max_df=0.5,  # words in half the pool tell nobody's papers apart
            dtype=np.float64,
        )
        try:
            self._matrix = self._vectorizer.fit_transform([p.text for p in papers]).tocsr()
        except ValueError:  # no pool, or not one word that is not a stop word
            self._matrix = None
        self._rows = {p.paper_id: i for i, p in enumerate(papers)}
        # The same unlabeled sample for every reader: deterministic, and its rows are
        # sliced once instead of once per reader.
        rng = np.random.default_rng(self.seed)
        n = len(papers)
        self._negative_rows = np.sort(rng.permutation(n)[: min(self.negatives, n)])
        self._topics = {}
        self._papers = {}
        self._outside = _OutsideGram()
        # Dense pool-by-pool cosines (at most GRAM_LIMIT² floats: 72 MB at 3,000): a pool
        # paper's similarity column is a row of it, and a centroid's length a block sum,
        # so a reader with feedback costs no sparse matrix work at all.
        self._gram = None
        if self._matrix is not None and n <= GRAM_LIMIT:
            self._gram = np.asarray((self._matrix @ self._matrix.T).toarray())

    @property
    def features(self) -> int:
        """The vocabulary's size (words and word pairs) after the last fit."""
        return 0 if self._matrix is None else int(self._matrix.shape[1])

    def encode(self, papers: Sequence[Paper]) -> sparse.csr_matrix:
        """Papers as L2-normalised rows in the fitted space (for tools that train on them)."""
        if self._vectorizer is None or self._matrix is None:
            return sparse.csr_matrix((len(papers), 0))
        return self._vectorizer.transform([p.text for p in papers]).tocsr()

    # -- what readers share, cached per pool --------------------------------------------------

    def _transform(self, text: str) -> sparse.csr_matrix:
        # Words the pool never uses are dropped: they cannot make any pool paper similar.
        assert self._vectorizer is not None
        return self._vectorizer.transform([text]).tocsr()

    def _sims(self, vector: sparse.csr_matrix) -> Vector:
        assert self._matrix is not None
        return np.asarray((self._matrix @ vector.T).toarray()).ravel()

    def _topic(self, topic: str) -> _Topic:
        key = " ".join(topic.casefold().split())
        if (cached := self._topics.get(key)) is None:
            assert self._matrix is not None
            query = self._transform(key)
            own = self._sims(query)
            # Pseudo-relevance feedback: the pool papers most like the bare words stand
            # for the topic too, which brings in their vocabulary (a reader types
            # "robotics"; papers say "robot", "manipulation", "grasp").
            best = np.argsort(-own, kind="stable")[:EXPANSION_DOCS]
            best = best[own[best] > 0]
            vector = query
            if best.size:
                centroid = sparse.csr_matrix(self._matrix[best].mean(axis=0))
                vector = _normalised(query + EXPANSION_WEIGHT * _normalised(centroid))
            cached = _Topic(vector=vector, sims=self._sims(vector))
            self._topics[key] = cached
        return cached

    def _paper(self, paper: Paper) -> tuple[sparse.csr_matrix, Vector]:
        """A rated paper's vector and the pool's similarity to it (it may predate the pool)."""
        if (cached := self._papers.get(paper.paper_id)) is None:
            assert self._matrix is not None
            row = self._rows.get(paper.paper_id)
            vector = self._matrix[row] if row is not None else self._transform(paper.text)
            sims = self._gram[row] if row is not None and self._gram is not None else None
            cached = (vector, sims if sims is not None else self._sims(vector))
            self._papers[paper.paper_id] = cached
        return cached

    # -- one reader --------------------------------------------------------------------------

    def score(self, reader: ReaderProfile) -> Relevance:
        n = len(self._rows)
        if self._matrix is None:
            return Relevance(scores=np.zeros(n))
        topics = _distinct(reader.topics)
        topic_info = [self._topic(t) for t in topics]
        liked = _distinct_papers(reader.liked)
        liked_info = [self._paper(p) for p in liked]
        topic_sims = np.vstack([t.sims for t in topic_info]) if topic_info else None
        liked_sims = np.vstack([s for _v, s in liked_info]) if liked_info else None

        if not reader.has_feedback:
            # Cold start: the best-matching topic decides (a paper on any one of the
            # reader's topics is for them).
            scores = topic_sims.max(axis=0) if topic_sims is not None else np.zeros(n)
        elif self.method == "profile":
            scores = self._profile(topic_sims, liked, _distinct_papers(reader.disliked))
        else:
            scores = self._svm(topic_info, liked, liked_info, _distinct_papers(reader.disliked))
        return Relevance(
            scores=scores,
            topics=topics,
            topic_sims=topic_sims,
            liked=liked,
            liked_sims=liked_sims,
        )

    def _profile(
        self, topic_sims: Vector | None, liked: Sequence[Paper], disliked: Sequence[Paper]
    ) -> Vector:
        """Rocchio in closed form: the best topic + b·cos(liked centroid) − c·cos(disliked one).

        Cosines to the *normalised* centroids: a plain mean of many liked papers is a
        short vector, and its pull would fade as the reader likes more. By linearity the
        cosine is the sum of the cached per-paper similarity columns over the centroid's
        length, so a reader costs a few vector additions and a small Gram matrix.
        """
        a, b, c = ROCCHIO
        scores = np.zeros(len(self._rows))
        if topic_sims is not None:
            scores += a * topic_sims.max(axis=0)
        if liked:
            scores += b * self._centroid_sims(liked)
        if disliked:
            scores -= c * self._centroid_sims(disliked)
        return scores

    def _centroid_sims(self, papers: Sequence[Paper]) -> Vector:
        cached = [self._paper(p) for p in papers]
        total: Vector = np.add.reduce([s for _v, s in cached])
        return total / length if (length := self._length(papers, cached)) > 0 else total

    def _length(
        self, papers: Sequence[Paper], cached: Sequence[tuple[sparse.csr_matrix, Vector]]
    ) -> float:
        """|sum of the papers' vectors|, from cached dot products where there are some."""
        rows = [self._rows.get(p.paper_id) for p in papers]
        inside = [r for r in rows if r is not None]
        outside = [(p, c) for p, r, c in zip(papers, rows, cached, strict=True) if r is None]
        if self._gram is None:
            stacked = sparse.vstack([v for v, _s in cached]).tocsr()
            return float(np.sqrt(max((stacked @ stacked.T).sum(), 0.0)))
        # |a + b|² = a·a + 2 a·b + b·b: pool papers from the Gram matrix, a pool paper with
        # an outside one from the outside one's cached similarity column, two outside
        # ones (papers of earlier editions, what readers usually marked) from their own.
        square = float(self._gram[inside][:, inside].sum()) if inside else 0.0
        for _paper, (_vector, sims) in outside:
            square += 2.0 * float(sims[inside].sum()) if inside else 0.0
        if outside:
            at = self._outside.rows([(p.paper_id, v) for p, (v, _s) in outside])
            if at is not None:
                square += float(self._outside.gram[at][:, at].sum())
            else:
                stacked = sparse.vstack([v for _p, (v, _s) in outside]).tocsr()
                square += float((stacked @ stacked.T).sum())
        return float(np.sqrt(max(square, 0.0)))

    def _svm(
        self,
        topic_info: Sequence[_Topic],
        liked: Sequence[Paper],
        liked_info: Sequence[tuple[sparse.csr_matrix, Vector]],
        disliked: Sequence[Paper],
    ) -> Vector:
        """arxiv-sanity-lite's model: a linear SVM trained for this reader alone.

        Positives: liked papers and the topics' pseudo-documents. Negatives: disliked
        papers (weighted up: the reader said so) and a sample of the pool, most of which
        is not for any one reader. Class weights balance the few positives against the
        many negatives. The score is the signed distance to the separating plane.
        """
        assert self._matrix is not None
        positives = [v for v, _s in liked_info] + [t.vector for t in topic_info]
        if not positives:
            # Only dislikes: nothing to move towards, so move away from what was disliked.
            return self._profile(None, (), disliked)
        rated = {p.paper_id for p in liked} | {p.paper_id for p in disliked}
        skip = {r for pid in rated if (r := self._rows.get(pid)) is not None}
        unlabeled = [int(r) for r in self._negative_rows if int(r) not in skip]
        negatives = [self._paper(p)[0] for p in disliked]
        if not negatives and not unlabeled:  # a pool of only rated papers: nothing to contrast
            return self._profile(None, liked, ())
        rows = sparse.vstack([*positives, *negatives, self._matrix[unlabeled]]).tocsr()
        labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives) + len(unlabeled))]
        weights = np.r_[
            np.ones(len(positives)),
            np.full(len(negatives), DISLIKE_WEIGHT),
            np.ones(len(unlabeled)),
        ]
        model = LinearSVC(
            C=self.c,
            class_weight="balanced",
            dual="auto",  # the dual problem when features outnumber rows, as they do here
            tol=1e-4,
            max_iter=2000,
            random_state=self.seed,
        )
        model.fit(rows, labels, sample_weight=weights)
        coef: Vector = np.asarray(model.coef_, dtype=np.float64).ravel()
        return np.asarray(self._matrix @ coef).ravel() + float(model.intercept_[0])


class _OutsideGram:
    """Pairwise dot products of rated papers from outside the pool, each pair computed once.

    Readers mostly mark papers of earlier editions, so their profiles' lengths need the
    dots among those; this grows as readers bring new ones (capacity doubling), up to
    ``limit`` papers (then callers fall back to sparse products).
    """

    def __init__(self, limit: int = OUTSIDE_LIMIT) -> None:
        self.limit = limit
        self.index: dict[str, int] = {}
        self.matrix: sparse.csr_matrix | None = None
        self.gram: Vector = np.zeros((0, 0))

    def rows(self, papers: Sequence[tuple[str, sparse.csr_matrix]]) -> list[int] | None:
        found = []
        for paper_id, vector in papers:
            at = self.index.get(paper_id)
            if at is None:
                if len(self.index) >= self.limit:
                    return None
                at = self._add(paper_id, vector)
            found.append(at)
        return found

    def _add(self, paper_id: str, vector: sparse.csr_matrix) -> int:
        n = len(self.index)
        if n == self.gram.shape[0]:
            grown = np.zeros((max(16, 2 * n), max(16, 2 * n)))
            grown[:n, :n] = self.gram[:n, :n]
            self.gram = grown
        stacked = vector if self.matrix is None else sparse.vstack([self.matrix, vector]).tocsr()
        dots = np.asarray((stacked @ vector.T).toarray()).ravel()  # with every one, itself last
        self.gram[n, : n + 1] = dots
        self.gram[: n + 1, n] = dots
        self.matrix = stacked
        self.index[paper_id] = n
        return n


def _normalised(vector: sparse.csr_matrix) -> sparse.csr_matrix:
    norm = float(np.sqrt(vector.multiply(vector).sum()))
    return (vector / norm).tocsr() if norm > 0 else vector


def _distinct(terms: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for term in terms:
        cleaned = " ".join(term.split())
        if cleaned and cleaned.casefold() not in seen:
            seen[cleaned.casefold()] = cleaned
    return tuple(seen.values())


def _distinct_papers(papers: Iterable[Paper]) -> tuple[Paper, ...]:
    return tuple({p.paper_id: p for p in papers}.values())
