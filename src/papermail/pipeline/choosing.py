"""Choosing many readers' papers at once: the blend, follows, blocks and top k as matrix
operations over (readers × pool), with why-lines read off the same matrices.

Planning a million readers one at a time spent ~0.3 ms each in numpy calls on vectors
of a few dozen floats: the call overhead, not the arithmetic. Here a batch of readers
is one matrix per step, and only the why-lines (a few strings per pick) are a Python
loop. ``relevance.choose`` is a batch of one, so a preview, a test send and planning
choose exactly alike.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from papermail.pipeline.blending import Trending

Matrix = NDArray[np.float64]
Rows = NDArray[np.intp]
Evidence = Literal["followed", "liked", "topic", "trending"]
EMPTY_ROWS: Rows = np.empty(0, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class Relevances:
    """A batch of readers' relevance over one pool, and what explains it.

    ``scores[i]`` is reader i's relevance of every pool paper. The explanations are
    shared matrices with per-reader row lists, since readers share topics and marked
    papers: ``topic_matrix[topic_rows[i]]`` are the pool's similarities to reader i's
    topics (named ``topic_names``), ``liked_matrix[liked_rows[i]]`` to the papers they
    liked (titled ``liked_titles``), each in the reader's own order.
    """

    scores: Matrix  # (readers, pool)
    topic_matrix: Matrix
    topic_names: Sequence[str]
    topic_rows: Sequence[Rows]
    liked_matrix: Matrix
    liked_titles: Sequence[str]
    liked_rows: Sequence[Rows]


@dataclass(frozen=True, slots=True)
class Reader:
    """What choosing reads of one reader besides their relevance."""

    weight: float  # trending (0) .. for me (1)
    k: int  # papers wanted
    followed: dict[int, str]  # pool row -> why-line ("From Meta AI, which you follow")
    blocked: Collection[int]  # pool rows never to pick: muted, marked, already sent
    # Pool rows never to pick that many readers share (new on arXiv outside the
    # categories they follow): one array for all of them, not a copy in each ``blocked``.
    excluded: Rows = field(default_factory=lambda: EMPTY_ROWS)


Decorate = Callable[[int, str], str]  # (pool row, a trending line) -> the line to show


@dataclass(frozen=True, slots=True)
class Choices:
    """Every reader's picks, best first, as flat lists (a million readers pick ten
    million papers: one object each would cost more than choosing them)."""

    rows: list[int]  # pool rows
    scores: list[float]  # the blended score each was ranked by
    evidence: list[Evidence]
    reasons: list[str]  # the why-line under the card
    bounds: list[int]  # reader i's picks are [bounds[i], bounds[i + 1])


def top_scaled_rows(values: Matrix, ks: NDArray[np.intp]) -> Matrix:
    """blending.top_scaled for each row, with row i's own ``ks[i]``: one partial sort."""
    m, n = values.shape
    if n == 0 or m == 0:
        return np.array(values, dtype=np.float64)
    kth = n - np.minimum(np.maximum(ks, 1), n)
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(values, sorted({lo, hi, *kth.tolist()}), axis=1)
    low = (part[:, lo] + part[:, hi]) / 2.0
    high = part[np.arange(m), kth]
    # Fewer than k papers above the median (a sparse cold start): scale by the best.
    high = np.where(high <= low, values.max(axis=1), high)
    out = np.zeros_like(values, dtype=np.float64)
    ok = high > low
    if ok.any():
        span = (high - low)[ok, None]
        out[ok] = np.clip((values[ok] - low[ok, None]) / span, 0.0, 1.0)
    return out


def choose_many(
    relevances: Relevances,
    trend: Trending,
    readers: Sequence[Reader],
    *,
    ids: Sequence[str],
    says: Callable[[str, int], bool],
    decorate: Decorate | None = None,
) -> Choices:
    """Each reader's top ``k``: relevance blended with trending at their weight, with reasons.

    The rules are relevance.choose's (its docstring says them); ``ids`` are the pool's
    paper ids and ``says(topic, row)`` whether a paper says a topic's words as typed;
    ``decorate(row, line)`` may add to a trending pick's line ("· 38 upvotes").
    """
    scores = relevances.scores
    m = len(readers)
    n = len(trend.values)
    if scores.shape != (m, n) or len(ids) != n:
        raise ValueError("relevance, trending and the pool must be in the same order")
    weights = np.array([r.weight for r in readers], dtype=np.float64)
    if m and not ((weights >= 0.0) & (weights <= 1.0)).all():
        bad = weights[(weights < 0.0) | (weights > 1.0)][0]
        raise ValueError(f"weight must be within [0, 1], not {bad}")
    ks = np.array([max(r.k, 0) for r in readers], dtype=np.intp)
    if m == 0 or n == 0:
        return Choices([], [], [], [], [0] * (m + 1))
    rel_unit = top_scaled_rows(scores, ks)
    mixed = (1.0 - weights)[:, None] * trend.unit[None, :] + weights[:, None] * rel_unit
    for i, reader in enumerate(readers):
        if reader.followed and reader.weight > 0:
            # Above anything unfollowed (at most 1), as in ranking.select; pure trending
            # (weight 0) is the same list as everyone's, follows included.
            mixed[i, list(reader.followed)] += 1.0 + 1e-9
    _block(mixed, readers)

    at_reader, at_row = _top(mixed, scores, trend.values, weights, ks)
    reasons = _Reasons(relevances, readers, says=says, ranks=trend.ranks, decorate=decorate)
    evidence, lines = reasons.of(
        at_reader,
        at_row,
        relevance_leads=weights[at_reader] * rel_unit[at_reader, at_row]
        >= (1.0 - weights[at_reader]) * trend.unit[at_row],
    )
    return Choices(
        rows=at_row.tolist(),
        scores=mixed[at_reader, at_row].tolist(),
        evidence=evidence,
        reasons=lines,
        # The picks are in reader order: where each reader's first pick is.
        bounds=np.searchsorted(at_reader, np.arange(m + 1)).tolist(),
    )


def _block(mixed: Matrix, readers: Sequence[Reader]) -> None:
    """Muted, marked, already-sent and excluded papers: never picked (-inf).

    Excluded rows are set once per distinct array for all the readers who share it:
    with a pool of hundreds of papers new on arXiv, copying them into each reader's list
    took a third of planning.
    """
    at_reader: list[int] = []
    at_row: list[int] = []
    shared: dict[int, tuple[Rows, list[int]]] = {}  # by the array's identity
    for i, reader in enumerate(readers):
        if reader.blocked:
            at_row.extend(reader.blocked)
            at_reader.extend([i] * (len(at_row) - len(at_reader)))
        if reader.excluded.size:
            shared.setdefault(id(reader.excluded), (reader.excluded, []))[1].append(i)
    if at_row:
        mixed[at_reader, at_row] = -np.inf
    for rows, members in shared.values():
        mixed[np.array(members, dtype=np.intp)[:, None], rows[None, :]] = -np.inf


def _top(
    mixed: Matrix, scores: Matrix, trending: Matrix, weights: Matrix, ks: NDArray[np.intp]
) -> tuple[Rows, Rows]:
    """Every reader's best ``k`` rows by ``mixed``, best first, as (reader, row) pairs.

    Ties go to the side the reader leans to (relevance at weight ≥ 0.5, else trending),
    then the other, then pool order. Blocked rows (-inf) never appear. A partial sort for
    each reader's k-th value, then an exact sort of the few rows at or above it.
    """
    m, n = mixed.shape
    want = np.minimum(ks, n)
    kth = np.maximum(want - 1, 0)
    # The k-th largest of each row (blocked rows sort last as +inf in -mixed).
    part = np.partition(-mixed, sorted(set(kth.tolist())), axis=1)
    threshold = -part[np.arange(m), kth]
    near = (mixed >= threshold[:, None]) & np.isfinite(mixed) & (want > 0)[:, None]
    at_reader, at_row = np.nonzero(near)
    values = mixed[at_reader, at_row]
    own = scores[at_reader, at_row]
    popular = trending[at_row]
    leans = weights[at_reader] >= 0.5
    first = np.where(leans, own, popular)
    second = np.where(leans, popular, own)
    order = np.lexsort((at_row, -second, -first, -values, at_reader))
    at_reader, at_row = at_reader[order], at_row[order]
    # Keep each reader's first k: position within the reader's run of candidates.
    starts = np.searchsorted(at_reader, np.arange(m))
    position = np.arange(at_reader.size) - starts[at_reader]
    keep = position < want[at_reader]
    return at_reader[keep], at_row[keep]


_EVIDENCE = np.array(["trending", "liked", "topic", "followed"], dtype=object)


class _Reasons:
    """Why-lines for many picks: which evidence holds is computed for all picks at once,
    and each distinct line is formatted once (a chunk's picks share a few hundred), so no
    Python code runs per pick but for readers who follow someone."""

    def __init__(
        self,
        relevances: Relevances,
        readers: Sequence[Reader],
        *,
        says: Callable[[str, int], bool],
        ranks: NDArray[np.int64],
        decorate: Decorate | None,
    ) -> None:
        self.relevances, self.readers, self.says, self.ranks = relevances, readers, says, ranks
        self.decorate = decorate

    def of(
        self, at_reader: Rows, at_row: Rows, *, relevance_leads: NDArray[np.bool_]
    ) -> tuple[list[Evidence], list[str]]:
        relevances = self.relevances
        liked_sim, liked_at = _best(
            relevances.liked_matrix, relevances.liked_rows, at_reader, at_row
        )
        topic_sim, topic_at = _best(
            relevances.topic_matrix, relevances.topic_rows, at_reader, at_row
        )
        liked = relevance_leads & (liked_at >= 0) & (liked_sim > 0) & (liked_sim >= topic_sim)
        topic = relevance_leads & ~liked & (topic_at >= 0) & (topic_sim > 0)
        kind = np.where(liked, 1, np.where(topic, 2, 0))
        # One integer per distinct line: the liked paper; the topic and the paper (whether
        # it says the topic's words); the paper's trending rank.
        pool, marked = self.ranks.size, len(relevances.liked_titles)
        topics_end = marked + max(len(relevances.topic_names), 1) * pool
        codes = np.where(
            liked, liked_at, np.where(topic, marked + topic_at * pool + at_row, topics_end + at_row)
        )
        distinct, inverse = np.unique(codes, return_inverse=True)
        texts = np.empty(distinct.size, dtype=object)
        texts[:] = [self._line(int(code), marked, topics_end, pool) for code in distinct.tolist()]
        lines: list[str] = texts[inverse.ravel()].tolist()
        evidence: list[Evidence] = _EVIDENCE[kind].tolist()
        self._followed(at_reader, at_row, evidence, lines)
        return evidence, lines

    def _followed(
        self, at_reader: Rows, at_row: Rows, evidence: list[Evidence], lines: list[str]
    ) -> None:
        """Follows come first, whatever else speaks for a paper: only their readers' picks
        are looked at one by one."""
        bounds = np.searchsorted(at_reader, np.arange(len(self.readers) + 1)).tolist()
        rows = at_row.tolist()
        for i, reader in enumerate(self.readers):
            if not reader.followed:
                continue
            for j in range(bounds[i], bounds[i + 1]):
                if (line := reader.followed.get(rows[j])) is not None:
                    evidence[j], lines[j] = "followed", line

    def _line(self, code: int, marked: int, topics_end: int, pool: int) -> str:
        if code < marked:
            title = self.relevances.liked_titles[code]
            return f"Similar to \u201c{title}\u201d, which you liked"
        if code < topics_end:
            at, row = divmod(code - marked, pool)
            topic = self.relevances.topic_names[at]
            # "Matches" only when the paper says the topic's words as the reader typed them
            # (ranking.select's rule); similar vocabulary alone is "related".
            verb = "Matches your topic" if self.says(topic, row) else "Related to your topic"
            return f"{verb} \u201c{topic}\u201d"
        row = code - topics_end
        # 1-based position in the trending order (ties by pool order, as _top breaks them).
        line = f"#{int(self.ranks[row])} trending"
        return self.decorate(row, line) if self.decorate else line


def _best(
    matrix: Matrix, rows: Sequence[Rows], at_reader: Rows, at_row: Rows
) -> tuple[Matrix, Rows]:
    """For each pick (reader, pool row): the largest of matrix[r, row] over the reader's
    rows r (the first such r on ties), as (similarity, r); (0, -1) for a reader with none."""
    picks = at_reader.size
    width = max((len(r) for r in rows), default=0)
    if width == 0 or matrix.size == 0 or picks == 0:
        return np.zeros(picks), np.full(picks, -1, dtype=np.intp)
    padded = np.full((len(rows), width), -1, dtype=np.intp)
    for i, own in enumerate(rows):
        padded[i, : len(own)] = own
    mine = padded[at_reader]  # (picks, width)
    sims = matrix[np.maximum(mine, 0), at_row[:, None]]
    sims[mine < 0] = -np.inf
    best = np.argmax(sims, axis=1)
    sim = sims[np.arange(picks), best]
    found = np.isfinite(sim)
    return np.where(found, sim, 0.0), np.where(found, mine[np.arange(picks), best], -1)
