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

from papermail.pipeline.batch_scoring import RatedPapers, TopicBatch
from papermail.pipeline.category_features import CategoryBlock, combined
from papermail.pipeline.choosing import EMPTY_ROWS, Relevances
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


@dataclass(frozen=True, slots=True)
class _Topic:
    vector: sparse.csr_matrix  # the pseudo-document, L2-normalised (1, features)
    sims: Vector  # the pool's similarity to it


class TfidfScorer:
    """tf-idf over title + keywords + abstract, beside the paper's arXiv categories
    (category_features.py); a linear SVM (or Rocchio profile) per reader.

    What many readers share is computed once per pool and cached: each distinct topic's
    pseudo-document and each marked paper's vector and similarity row (``_Rated``). So a
    batch of readers costs a few matrix products (``score_many``), and with the SVM
    method one small fit per reader with feedback.
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
        self._categories = CategoryBlock([])
        self._rows: dict[str, int] = {}
        self._negative_rows: NDArray[np.intp] = np.empty(0, dtype=np.intp)
        self._topics: dict[str, _Topic] = {}
        self._rated = RatedPapers(0)

    def fit(self, papers: Sequence[Paper]) -> None:
        self._vectorizer = TfidfVectorizer(
            sublinear_tf=True,  # the tenth "robot" says less than the first
            stop_words="english",
            ngram_range=(1, 2),  # "language model", "point cloud"
            max_df=0.5,  # words in half the pool tell nobody's papers apart
            dtype=np.float64,
        )
        self._categories = CategoryBlock([p.categories for p in papers])
        try:
            words = self._vectorizer.fit_transform([p.text for p in papers]).tocsr()
        except ValueError:  # no pool, or not one word that is not a stop word
            self._matrix = None
        else:
            self._matrix = combined(words, self._categories.rows([p.categories for p in papers]))
        self._rows = {p.paper_id: i for i, p in enumerate(papers)}
        # The same unlabeled sample for every reader: deterministic, and its rows are
        # sliced once instead of once per reader.
        rng = np.random.default_rng(self.seed)
        n = len(papers)
        self._negative_rows = np.sort(rng.permutation(n)[: min(self.negatives, n)])
        self._topics = {}
        self._rated = RatedPapers(n)

    @property
    def features(self) -> int:
        """The vocabulary's size (words, word pairs, categories) after the last fit."""
        return 0 if self._matrix is None else int(self._matrix.shape[1])

    def encode(self, papers: Sequence[Paper]) -> sparse.csr_matrix:
        """Papers as L2-normalised rows in the fitted space (for tools that train on them)."""
        if self._vectorizer is None or self._matrix is None:
            return sparse.csr_matrix((len(papers), 0))
        # Words and categories the pool never uses are dropped: they cannot make any pool
        # paper similar.
        words = self._vectorizer.transform([p.text for p in papers]).tocsr()
        return combined(words, self._categories.rows([p.categories for p in papers]))

    # -- what readers share, cached per pool --------------------------------------------------

    def _transform(self, text: str) -> sparse.csr_matrix:
        """Typed words (a topic): words only, no category."""
        return self.encode([Paper(paper_id="", title="", abstract=text)])

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

    def _topic_sims(self, topic: str) -> Vector:
        return self._topic(topic).sims

    def _vectorize(self, paper: Paper) -> tuple[sparse.csr_matrix, Vector]:
        """A marked paper's vector and the pool's similarity to it (it may predate the
        pool); cached by ``_Rated``, so once per paper and planning run."""
        assert self._matrix is not None
        row = self._rows.get(paper.paper_id)
        vector = self._matrix[row] if row is not None else self.encode([paper])
        return vector, self._sims(vector)

    # -- readers ----------------------------------------------------------------------------

    def score(self, reader: ReaderProfile) -> Relevance:
        """One reader: a batch of one (so a preview scores exactly as planning does)."""
        batch = self.score_many([reader])
        return Relevance(
            scores=batch.scores[0],
            topics=tuple(batch.topic_names[r] for r in batch.topic_rows[0]),
            topic_sims=batch.topic_matrix[batch.topic_rows[0]]
            if self._matrix is not None
            else None,
            liked=_distinct_papers(reader.liked) if self._matrix is not None else (),
            liked_sims=batch.liked_matrix[batch.liked_rows[0]]
            if self._matrix is not None
            else None,
        )

    def score_many(self, readers: Sequence[ReaderProfile]) -> Relevances:
        """Many readers' relevance over the pool, as matrices (choosing.choose_many's input).

        Cold start: the best-matching topic (a paper on any one of the reader's topics is
        for them). With feedback, the profile is in closed form: best topic + b·cos(liked
        centroid) − c·cos(disliked centroid), every reader at once as (readers × rated)
        indicator products with the rated papers' similarity rows; the SVM, per reader.
        """
        n = len(self._rows)
        m = len(readers)
        if self._matrix is None:
            return _nothing(m, n)
        liked = [_distinct_papers(r.liked) for r in readers]
        disliked = [_distinct_papers(r.disliked) for r in readers]
        needed = {p.paper_id for group in (liked, disliked) for ps in group for p in ps}
        if len(needed) > self._rated.limit and m > 1:  # keep the rated rows bounded
            half = m // 2
            return _joined(self.score_many(readers[:half]), self.score_many(readers[half:]))
        if len(needed - self._rated.index.keys()) > self._rated.limit - len(self._rated.index):
            self._rated.clear()
        liked_rows = [self._rated_rows(ps) for ps in liked]
        disliked_rows = [self._rated_rows(ps) for ps in disliked]
        topics = TopicBatch(n, self._topic_sims, [r.topics for r in readers])
        scores = topics.best.copy()  # (readers, pool): cold start, and the profile's first term
        with_feedback = [i for i, r in enumerate(readers) if r.has_feedback]
        if with_feedback and self.method == "profile":
            a, b, c = ROCCHIO
            profile = a * topics.best[with_feedback]
            profile += b * self._rated.centroid_sims([liked_rows[i] for i in with_feedback])
            profile -= c * self._rated.centroid_sims([disliked_rows[i] for i in with_feedback])
            scores[with_feedback] = profile
        for i in with_feedback if self.method == "svm" else ():
            topic_info = [self._topic(t) for t in topics.names_of(i)]
            scores[i] = self._svm(topic_info, liked[i], disliked[i])
        return Relevances(
            scores=scores,
            topic_matrix=topics.matrix,
            topic_names=topics.names,
            topic_rows=topics.rows,
            liked_matrix=self._rated.sims,
            liked_titles=tuple(self._rated.titles),  # a copy: the list grows on
            liked_rows=liked_rows,
        )

    def _rated_rows(self, papers: Sequence[Paper]) -> NDArray[np.intp]:
        if not papers:
            return EMPTY_ROWS
        index = self._rated.index
        rows = [index.get(p.paper_id) for p in papers]
        if None in rows:  # a first sight: vectorize it (once per planning run)
            rows = [self._rated.add(p, self._vectorize) for p in papers]
        return np.array(rows, dtype=np.intp)

    def _svm(
        self, topic_info: Sequence[_Topic], liked: Sequence[Paper], disliked: Sequence[Paper]
    ) -> Vector:
        """arxiv-sanity-lite's model: a linear SVM trained for this reader alone.

        Positives: liked papers and the topics' pseudo-documents. Negatives: disliked
        papers (weighted up: the reader said so) and a sample of the pool, most of which
        is not for any one reader. Class weights balance the few positives against the
        many negatives. The score is the signed distance to the separating plane.
        """
        assert self._matrix is not None
        positives = [self._rated.vector(r) for r in self._rated_rows(liked)]
        positives += [t.vector for t in topic_info]
        b, c = ROCCHIO[1:]
        if not positives:
            # Only dislikes: nothing to move towards, so move away from what was disliked.
            return -c * self._rated.centroid_sims([self._rated_rows(disliked)])[0]
        rated = {p.paper_id for p in liked} | {p.paper_id for p in disliked}
        skip = {r for pid in rated if (r := self._rows.get(pid)) is not None}
        unlabeled = [int(r) for r in self._negative_rows if int(r) not in skip]
        negatives = [self._rated.vector(r) for r in self._rated_rows(disliked)]
        if not negatives and not unlabeled:  # a pool of only rated papers: nothing to contrast
            return b * self._rated.centroid_sims([self._rated_rows(liked)])[0]
        rows = sparse.vstack([*positives, *negatives, self._matrix[unlabeled]]).tocsr()
        labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives) + len(unlabeled))]
        weights = np.r_[
            np.ones(len(positives)),
            np.full(len(negatives), DISLIKE_WEIGHT),
            np.ones(len(unlabeled)),
        ]
        from sklearn.svm import LinearSVC  # here: planning (the profile) never loads it

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


def _nothing(readers: int, pool: int) -> Relevances:
    """All zeros: a pool with not one word to score by."""
    return Relevances(
        scores=np.zeros((readers, pool)),
        topic_matrix=np.zeros((0, pool)),
        topic_names=(),
        topic_rows=[EMPTY_ROWS] * readers,
        liked_matrix=np.zeros((0, pool)),
        liked_titles=(),
        liked_rows=[EMPTY_ROWS] * readers,
    )


def _joined(first: Relevances, second: Relevances) -> Relevances:
    """Two batches as one: each half's rows re-based onto the stacked matrices."""
    topics, liked = len(first.topic_names), len(first.liked_titles)
    return Relevances(
        scores=np.vstack([first.scores, second.scores]),
        topic_matrix=np.vstack([first.topic_matrix, second.topic_matrix]),
        topic_names=[*first.topic_names, *second.topic_names],
        topic_rows=[*first.topic_rows, *(r + topics for r in second.topic_rows)],
        liked_matrix=np.vstack([first.liked_matrix, second.liked_matrix]),
        liked_titles=[*first.liked_titles, *second.liked_titles],
        liked_rows=[*first.liked_rows, *(r + liked for r in second.liked_rows)],
    )


def _normalised(vector: sparse.csr_matrix) -> sparse.csr_matrix:
    norm = float(np.sqrt(vector.multiply(vector).sum()))
    return (vector / norm).tocsr() if norm > 0 else vector


def _distinct_papers(papers: Iterable[Paper]) -> tuple[Paper, ...]:
    return tuple({p.paper_id: p for p in papers}.values())
