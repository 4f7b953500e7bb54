"""arXiv categories as features beside a paper's words.

A reader who marks three cs.RO papers "More like this" is telling papermail about a field
as much as about words; two robotics papers can share few words and one category. arXiv
says each paper's categories (primary first, then cross-lists; sources/arxiv.py), so the
text model gets them as a second block of columns:

    row = √(1 − s) · words  ⊕  √s · categories        (each block L2-normalised first)

so the cosine of two papers that both have categories is (1 − s)·cos(words) +
s·cos(categories), with s = ``CATEGORY_SHARE``. A paper arXiv has not described (a Hugging
Face paper the arXiv ingest has not met) has only its words, and a pool without categories
scores exactly as the words alone do.

In the category block the primary category counts ``1``, a cross-list ``CROSS_LIST``, each
times its idf over the pool (cs.LG, on a third of a pool, says less than cs.RO).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

# Of a similarity between two described papers, the share their categories decide. Chosen
# on the dev corpus (docs/relevance.md, "Categories"): 0.3 already gives most of the gain,
# and words must still tell a paper apart within its field.
CATEGORY_SHARE = 0.5
CROSS_LIST = 0.5  # a cross-listed category says "relevant to", the primary "is"


class CategoryBlock:
    """The pool's category vocabulary and idf; rows for pool papers and for any other."""

    def __init__(self, pools_categories: Sequence[Sequence[str]]) -> None:
        self.columns: dict[str, int] = {}
        for categories in pools_categories:
            for code in categories:
                self.columns.setdefault(code, len(self.columns))
        df = np.zeros(len(self.columns))
        for categories in pools_categories:
            for code in set(categories):
                df[self.columns[code]] += 1
        n = len(pools_categories)
        self.idf = np.log((1 + n) / (1 + df)) + 1  # scikit-learn's smoothed idf

    @property
    def width(self) -> int:
        return len(self.columns)

    def rows(self, papers_categories: Sequence[Sequence[str]]) -> sparse.csr_matrix:
        """One L2-normalised row a paper; categories the pool never had are dropped (they
        cannot make any pool paper similar), and a paper with none is a row of zeros."""
        indptr: list[int] = [0]
        indices: list[int] = []
        data: list[float] = []
        for categories in papers_categories:
            weights: dict[int, float] = {}
            for position, code in enumerate(categories):
                if (column := self.columns.get(code)) is not None and column not in weights:
                    weights[column] = (1.0 if position == 0 else CROSS_LIST) * self.idf[column]
            norm = float(np.sqrt(sum(w * w for w in weights.values()))) or 1.0
            indices.extend(weights)
            data.extend(w / norm for w in weights.values())
            indptr.append(len(indices))
        return sparse.csr_matrix(
            (np.array(data, dtype=np.float64), np.array(indices, dtype=np.int32), indptr),
            shape=(len(papers_categories), self.width),
        )


def combined(words: sparse.csr_matrix, categories: sparse.csr_matrix) -> sparse.csr_matrix:
    """Both blocks in one L2-normalised row a paper (see the module's docstring).

    Each block's rows are L2-normalised or empty (TfidfVectorizer's and ``rows``'), so a
    row's length is known from which of its blocks it has. A row with no category is the
    words alone, at full length; a pool without categories gives ``words`` back unchanged.
    Built from the CSR arrays directly: a marked paper from outside the pool is encoded
    alone, thousands of times a planning run, and stacking matrices costs ~1 ms a call.
    """
    if categories.shape[1] == 0:
        return words
    words, categories = words.tocsr(), categories.tocsr()
    word_counts, category_counts = np.diff(words.indptr), np.diff(categories.indptr)
    length = np.sqrt(
        (1 - CATEGORY_SHARE) * (word_counts > 0) + CATEGORY_SHARE * (category_counts > 0)
    )
    length[length == 0] = 1.0
    # In each row, its words' entries first, then its categories'.
    indptr = words.indptr + categories.indptr
    word_at = np.arange(words.nnz) + np.repeat(categories.indptr[:-1], word_counts)
    category_at = np.arange(categories.nnz) + np.repeat(words.indptr[1:], category_counts)
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float64)
    indices[word_at] = words.indices
    indices[category_at] = categories.indices + words.shape[1]
    data[word_at] = words.data * np.repeat(np.sqrt(1 - CATEGORY_SHARE) / length, word_counts)
    data[category_at] = categories.data * np.repeat(
        np.sqrt(CATEGORY_SHARE) / length, category_counts
    )
    return sparse.csr_matrix(
        (data, indices, indptr), shape=(words.shape[0], words.shape[1] + categories.shape[1])
    )
