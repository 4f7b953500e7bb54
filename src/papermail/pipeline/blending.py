"""Blending trending with relevance: each put on a [0, 1] scale by what its numbers mean.

``blend`` is the reader's "trending vs. for me" mix; ``Trending`` holds what every reader's
``relevance.choose`` reads of an edition's trending scores, made once per edition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float64]
DEFAULT_WEIGHT = 0.5  # "trending vs. for me": 0 = pure trending, 1 = pure relevance


def scaled(values: Vector) -> Vector:
    """Min-max to [0, 1] (all equal -> all 0): for scores whose size means something.

    Trending is heavy-tailed: a few papers with many votes, a long tail near zero. Scaling
    keeps that shape, so only a paper that really stands out competes with a reader's
    own papers; ranks would spread the tail's near-ties evenly over [0, 1].
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def top_scaled(values: Vector, k: int) -> Vector:
    """0 at the median, 1 at the ``k``-th best, linear between, clipped: for arbitrary scales.

    A reader's relevance is an SVM margin or a cosine whose size differs from reader to
    reader and is easily stretched by one outlier (a liked paper seen again), so neither
    its raw size nor its max means much. What does: the reader's own best ``k`` (an
    email's worth) are all fully "for me" (1), and the half of the pool below the median
    is not for them at all (0). Trending then orders the best ``k`` among themselves and
    only a paper that is both well ranked for the reader and trending displaces one of
    them; a paper that is merely trending gets in only when it stands out (its scaled
    votes outweigh a whole "for me" share).
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        return values
    # The median and the k-th best from one partial sort (np.median costs a second one).
    kth = n - min(max(k, 1), n)
    middle = sorted({(n - 1) // 2, n // 2, kth})
    part = np.partition(values, middle)
    low = float(part[(n - 1) // 2] + part[n // 2]) / 2.0
    high = float(part[kth])
    if high <= low:  # fewer than k papers above the median (a sparse cold start)
        high = float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def blend(
    trending: Vector, relevance: Vector, weight: float = DEFAULT_WEIGHT, *, k: int = 10
) -> Vector:
    """(1 − weight)·trending + weight·relevance, each normalised to [0, 1] first.

    ``weight`` is the reader's "trending vs. for me" setting: 0 is the same list as
    everyone's, 1 is their own relevance alone. Trending is min-max scaled (its size
    means something: votes); relevance by :func:`top_scaled` (only its order near the
    top does). ``k`` is the email's length.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], not {weight}")
    return (1.0 - weight) * scaled(trending) + weight * top_scaled(relevance, k)


@dataclass(frozen=True, slots=True)
class Trending:
    """A pool's trending scores, with what every reader's ``choose`` reads of them: made
    once per edition instead of once per reader."""

    values: Vector  # higher = more trending, in pool order
    unit: Vector  # scaled(values)
    ranks: NDArray[np.int64]  # 1-based position in trending order, ties by pool order

    @classmethod
    def of(cls, values: Vector | Sequence[float]) -> Trending:
        values = np.asarray(values, dtype=np.float64)
        order = np.lexsort((np.arange(values.size), -values))
        ranks = np.empty(values.size, dtype=np.int64)
        ranks[order] = np.arange(1, values.size + 1)
        return cls(values=values, unit=scaled(values), ranks=ranks)
