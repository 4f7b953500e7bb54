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

from papermail.pipeline.batch_scoring import RatedPapers, TopicBatch, topic_key
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

# Typed topics a planning run remembers, bounded by their similarity rows' cells (2^21 cells
# is 16 MB: 2,097 topics over a 1,000-paper pool) and by count (each keeps its key too).
# Readers type their topics, so a list states thousands of distinct ones; unbounded, the
# memo grew with every new one (docs/performance.md, "Sixteenth day").
TOPIC_CELLS = 1 << 21
TOPICS_REMEMBERED = 16_384
TOPICS_AT_ONCE = 128  # new topics vectorized in one go: as fast a topic as 512, a third the memory


@dataclass(frozen=True, slots=True)
class _Expansion:
    """Typed topics' own words, and the pool papers that stand for each topic too."""

    query: sparse.csr_matrix  # (topics, features): the typed words, L2-normalised
    own: Vector  # (topics, pool): the pool's similarity to the typed words
    best: NDArray[np.intp]  # (topics, EXPANSION_DOCS): the pool rows most like them...
    chosen: NDArray[np.bool_]  # ...those of them with any likeness at all
    picks: sparse.csr_matrix  # (topics, pool): 1 at each chosen row

    @property
    def expanded(self) -> NDArray[np.bool_]:
        """(topics,): whether any pool paper stands for the topic."""
        return np.asarray(self.chosen.any(axis=1), dtype=np.bool_)


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
        self._transposed: sparse.csr_matrix | None = None  # (features, pool), for _sims
        self._categories = CategoryBlock([])
        self._rows: dict[str, int] = {}
        self._negative_rows: NDArray[np.intp] = np.empty(0, dtype=np.intp)
        self._topic_sims: dict[str, Vector] = {}  # by normalised topic: its row over the pool
        self._topic_vectors: dict[str, sparse.csr_matrix] = {}  # the SVM's positives
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
            self._matrix = self._transposed = None
        else:
            self._matrix = combined(words, self._categories.rows([p.categories for p in papers]))
            self._transposed = self._matrix.T.tocsr()
        self._rows = {p.paper_id: i for i, p in enumerate(papers)}
        # The same unlabeled sample for every reader: deterministic, and its rows are
        # sliced once instead of once per reader.
        rng = np.random.default_rng(self.seed)
        n = len(papers)
        self._negative_rows = np.sort(rng.permutation(n)[: min(self.negatives, n)])
        self._topic_sims = {}
        self._topic_vectors = {}
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

    def _sims(self, vector: sparse.csr_matrix) -> Vector:
        """The pool's similarity to each row of ``vector``: (rows, pool). Against the
        pool's transpose, kept from the fit: the same products summed in the same order
        as ``matrix @ vector.T``, without transposing ``vector`` each call (~10% of a
        topic's cost when many go at once)."""
        assert self._transposed is not None
        return np.asarray((vector @ self._transposed).toarray())

    def _expand(self, keys: Sequence[str]) -> _Expansion:
        """Pseudo-relevance feedback, for many typed topics (normalised keys) at once: the
        EXPANSION_DOCS pool papers most like a topic's bare words stand for it too, which
        brings in their vocabulary (a reader types "robotics"; papers say "robot",
        "manipulation", "grasp"). One transform for the lot: a topic alone cost ~5 ms,
        mostly the vectorizer's overhead a call, and readers type thousands of topics."""
        assert self._matrix is not None
        query = self.encode([Paper(paper_id="", title="", abstract=k) for k in keys])
        own = self._sims(query)
        best = np.argsort(-own, axis=1, kind="stable")[:, :EXPANSION_DOCS]
        chosen = np.take_along_axis(own, best, axis=1) > 0
        counts = chosen.sum(axis=1)
        picks = sparse.csr_matrix(
            (np.ones(int(counts.sum())), best[chosen], np.r_[0, np.cumsum(counts)]),
            shape=(len(keys), self._matrix.shape[0]),
        )
        return _Expansion(query, own, best, chosen, picks)

    def _topics_sims(self, keys: Sequence[str]) -> Vector:
        """The pool's similarity to typed topics' pseudo-documents: (topics, pool).

        A topic's pseudo-document is v = (q + w·s/|s|) / |q + w·s/|s||: its words q, and
        s, the sum of its expansion papers' rows, at weight w. Its similarity row M·v
        follows from M·q and M·s by linearity, and both lengths from the same rows
        (|s|² is the sum of M·s over the expansion papers, q·s that of M·q), so v itself
        is never built: the sparse arithmetic of building it was most of a topic's cost.
        """
        assert self._matrix is not None
        e = self._expand(keys)
        dots = self._sims(e.picks @ self._matrix)  # M·s
        s_length = np.sqrt(_over_chosen(dots, e))
        expanded = e.expanded & (s_length > 0)
        sims = e.own.copy()  # a topic nothing in the pool shares a word with: its words alone
        if expanded.any():
            w, length = EXPANSION_WEIGHT, s_length[expanded]
            q_s = _over_chosen(e.own, e)[expanded]
            q_q = _row_norms(e.query)[expanded] ** 2
            v_length = np.sqrt(q_q + 2 * w * q_s / length + w * w)
            moved = e.own[expanded] + w * dots[expanded] / length[:, None]
            sims[expanded] = moved / v_length[:, None]
        return sims

    def _topic_rows(self, names: Sequence[str]) -> Vector:
        """The pool's similarity to each typed topic: (topics, pool), remembered per run
        within TOPIC_CELLS (and TOPICS_REMEMBERED), starting over when full."""
        keys = [topic_key(name) for name in names]
        found = {k: row for k in keys if (row := self._topic_sims.get(k)) is not None}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        for start in range(0, len(missing), TOPICS_AT_ONCE):
            chunk = missing[start : start + TOPICS_AT_ONCE]
            for key, row in zip(chunk, self._topics_sims(chunk), strict=True):
                if len(self._topic_sims) >= self._topics_limit:
                    self._topic_sims.clear()
                # A copy: a row of the chunk's matrix would keep the whole matrix alive.
                found[key] = self._topic_sims[key] = row.copy()
        return np.vstack([found[k] for k in keys]) if keys else np.zeros((0, len(self._rows)))

    @property
    def _topics_limit(self) -> int:
        return max(1, min(TOPICS_REMEMBERED, TOPIC_CELLS // max(1, len(self._rows))))

    def _topic_vector(self, name: str) -> sparse.csr_matrix:
        """A typed topic's pseudo-document (the SVM trains on it as a positive)."""
        assert self._matrix is not None
        key = topic_key(name)
        if (vector := self._topic_vectors.get(key)) is None:
            e = self._expand([key])
            vector = e.query
            if e.expanded[0]:
                centroid = _normalised_rows(e.picks @ self._matrix)
                vector = _normalised_rows(e.query + EXPANSION_WEIGHT * centroid)
            if len(self._topic_vectors) >= self._topics_limit:
                self._topic_vectors.clear()
            self._topic_vectors[key] = vector
        return vector

    def _vectorize(self, paper: Paper) -> tuple[sparse.csr_matrix, Vector]:
        """A marked paper's vector and the pool's similarity to it (it may predate the
        pool); cached by ``_Rated``, so once per paper and planning run."""
        assert self._matrix is not None
        row = self._rows.get(paper.paper_id)
        vector = self._matrix[row] if row is not None else self.encode([paper])
        return vector, self._sims(vector)[0]

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
        topics = TopicBatch(n, self._topic_rows, [r.topics for r in readers])
        scores = topics.best.copy()  # (readers, pool): cold start, and the profile's first term
        with_feedback = [i for i, r in enumerate(readers) if r.has_feedback]
        if with_feedback and self.method == "profile":
            a, b, c = ROCCHIO
            profile = a * topics.best[with_feedback]
            profile += b * self._rated.centroid_sims([liked_rows[i] for i in with_feedback])
            profile -= c * self._rated.centroid_sims([disliked_rows[i] for i in with_feedback])
            scores[with_feedback] = profile
        for i in with_feedback if self.method == "svm" else ():
            typed = [self._topic_vector(t) for t in topics.names_of(i)]
            scores[i] = self._svm(typed, liked[i], disliked[i])
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
        self,
        topics: Sequence[sparse.csr_matrix],
        liked: Sequence[Paper],
        disliked: Sequence[Paper],
    ) -> Vector:
        """arxiv-sanity-lite's model: a linear SVM trained for this reader alone.

        Positives: liked papers and the topics' pseudo-documents. Negatives: disliked
        papers (weighted up: the reader said so) and a sample of the pool, most of which
        is not for any one reader. Class weights balance the few positives against the
        many negatives. The score is the signed distance to the separating plane.
        """
        assert self._matrix is not None
        positives = [self._rated.vector(r) for r in self._rated_rows(liked)]
        positives += topics
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


def _over_chosen(values: Vector, e: _Expansion) -> Vector:
    """Each topic's sum of ``values`` (topics, pool) over its expansion papers."""
    return (np.take_along_axis(values, e.best, axis=1) * e.chosen).sum(axis=1)


def _row_norms(matrix: sparse.csr_matrix) -> Vector:
    return np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())


def _normalised_rows(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """Each row at length 1; a row of zeros stays zeros."""
    norms = _row_norms(matrix)
    return sparse.csr_matrix(sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix)


def _distinct_papers(papers: Iterable[Paper]) -> tuple[Paper, ...]:
    return tuple({p.paper_id: p for p in papers}.values())
