"""What a batch of readers shares when TfidfScorer.score_many scores them: the similarity
rows of their topics, and the papers they marked with their vectors and similarity rows.

Both are read through row indices, so a reader costs a few integers and the arithmetic is
one matrix product per batch (see docs/relevance.md, "Timings").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from papermail.pipeline.choosing import EMPTY_ROWS
from papermail.pipeline.relevance import Paper, Vector

# Marked papers whose similarity rows a planning run keeps: at most 4,096, and at most
# 2^22 cells of rows (32 MB: 4,096 rows over the default 1,000-paper pool, 419 over the
# largest pool Settings.edition_size allows). Readers mark what earlier emails sent
# them, a few thousand papers in all.
RATED_LIMIT = 4_096
RATED_CELLS = 1 << 22
RATED_AT_LEAST = 64  # however large the pool: a batch needs its readers' marks at once
GRAM_LIMIT = 2_048  # marked papers in one batch's Gram matrix (32 MB)
GATHER_CELLS = 1 << 21  # pairwise dots gathered at once (16 MB)

Vectorize = Callable[[Paper], tuple[sparse.csr_matrix, Vector]]


class TopicBatch:
    """A batch's topics: each distinct one's similarity row once, each reader's rows into
    them, and each reader's best-topic row (the cold-start score).

    ``topic_sims`` gives the rows of many topics at once: (topics, pool).
    """

    def __init__(
        self,
        n: int,
        topic_sims: Callable[[Sequence[str]], Vector],
        topics: Sequence[tuple[str, ...]],
    ) -> None:
        at: dict[str, int] = {}
        names: list[str] = []
        groups: dict[tuple[str, ...], int] = {}
        group_rows: list[NDArray[np.intp]] = []
        self.rows: list[NDArray[np.intp]] = []
        which = np.empty(len(topics), dtype=np.intp)
        for i, typed in enumerate(topics):
            if (group := groups.get(typed)) is None:
                rows = []
                for name in _distinct(typed):
                    key = topic_key(name)
                    if (row := at.get(key)) is None:
                        row = at[key] = len(names)
                        names.append(name)
                    rows.append(row)
                group = groups[typed] = len(group_rows)
                group_rows.append(np.array(rows, dtype=np.intp) if rows else EMPTY_ROWS)
            which[i] = group
            self.rows.append(group_rows[group])
        self.names = names
        self.matrix: Vector = topic_sims(names) if names else np.zeros((0, n))
        best = [self.matrix[rows].max(axis=0) if rows.size else np.zeros(n) for rows in group_rows]
        self.best: Vector = np.vstack(best)[which] if best else np.zeros((0, n))

    def names_of(self, i: int) -> list[str]:
        return [self.names[r] for r in self.rows[i]]


class RatedPapers:
    """Papers readers marked (in the pool or from earlier editions), each with its tf-idf
    vector and its similarity row over the pool, computed once per planning run.

    Bounded: at ``limit`` papers it starts over (a batch that needs more is split by the
    caller), so a run's memory is limit × pool floats (RATED_CELLS) however many papers
    were marked.
    Rows are appended, never rewritten: a batch's Relevances keep reading the rows they
    were given even after the registry grows or starts over.
    """

    def __init__(self, pool: int) -> None:
        self.pool = pool
        self.limit = max(RATED_AT_LEAST, min(RATED_LIMIT, RATED_CELLS // max(1, pool)))
        self.clear()

    def clear(self) -> None:
        self.index: dict[str, int] = {}
        self.titles: list[str] = []
        self._vectors: list[sparse.csr_matrix] = []
        self._stacked: sparse.csr_matrix | None = None
        self._sims: Vector = np.zeros((16, self.pool))

    def vector(self, row: int) -> sparse.csr_matrix:
        return self._vectors[row]

    @property
    def sims(self) -> Vector:
        return self._sims[: len(self.titles)]

    def add(self, paper: Paper, vectorize: Vectorize) -> int:
        if (row := self.index.get(paper.paper_id)) is not None:
            return row
        vector, sims = vectorize(paper)
        row = len(self.titles)
        if row == self._sims.shape[0]:  # a new array, not in place: see the class docstring
            grown = np.zeros((2 * row, self.pool))
            grown[:row] = self._sims[:row]
            self._sims = grown
        self._sims[row] = sims
        self._vectors.append(vector)
        self._stacked = None
        self.titles.append(paper.title)
        self.index[paper.paper_id] = row
        return row

    def centroid_sims(self, groups: Sequence[NDArray[np.intp]]) -> Vector:
        """For each group of rated rows: the pool's cosine to the group's normalised
        centroid (its rows' similarity sum over |sum of its vectors|); zeros if empty.

        |sum|² is the sum of the group's pairwise dot products, read from the Gram matrix
        of the papers the batch uses (a few hundred: far cheaper than summing vectors).
        """
        m, size = len(groups), len(self.titles)
        counts = np.fromiter((g.size for g in groups), dtype=np.intp, count=m)
        if not counts.any():
            return np.zeros((m, self.pool))
        flat = np.concatenate(groups)
        used = np.unique(flat)
        if used.size > GRAM_LIMIT and m > 1:  # keep the Gram matrix small: halve the batch
            half = m // 2
            return np.vstack([self.centroid_sims(groups[:half]), self.centroid_sims(groups[half:])])
        starts = np.r_[0, np.cumsum(counts)]
        members = sparse.csr_matrix((np.ones(flat.size), flat, starts), shape=(m, size))
        total: Vector = np.asarray(members @ self._sims[:size])
        if self._stacked is None:
            self._stacked = sparse.vstack(self._vectors).tocsr()
        vectors = self._stacked[used]
        gram = np.zeros((used.size + 1, used.size + 1))  # the last row and column: padding
        gram[:-1, :-1] = (vectors @ vectors.T).toarray()
        padded = np.full((m, int(counts.max())), used.size, dtype=np.intp)
        owner = np.repeat(np.arange(m), counts)
        padded[owner, np.arange(flat.size) - starts[owner]] = np.searchsorted(used, flat)
        squares = np.zeros(m)
        step = max(1, GATHER_CELLS // padded.shape[1] ** 2)
        for start in range(0, m, step):
            block = padded[start : start + step]
            squares[start : start + step] = gram[block[:, :, None], block[:, None, :]].sum(
                axis=(1, 2)
            )
        length = np.sqrt(np.maximum(squares, 0.0))
        scale = np.where(length > 0, length, 1.0)
        return total / scale[:, None]


def topic_key(topic: str) -> str:
    """Topics that differ only in case and spacing are one topic."""
    return " ".join(topic.casefold().split())


def _distinct(terms: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for term in terms:
        cleaned = " ".join(term.split())
        if cleaned and cleaned.casefold() not in seen:
            seen[cleaned.casefold()] = cleaned
    return tuple(seen.values())
