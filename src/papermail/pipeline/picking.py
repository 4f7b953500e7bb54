"""Each reader's papers for one edition: learned relevance blended with trending.

``EditionPicker`` is built once per edition and planning run: the edition's whole pool
(every paper ingested for its window, in trending order) fitted by the scorer once.
``pick`` then chooses one reader's papers (relevance.choose) with why-lines, never one
they disliked, muted or were already sent. Pure domain: the planner reads readers and
their feedback from the database and hands them in.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from papermail.pipeline import choosing, relevance
from papermail.pipeline.blending import Trending
from papermail.pipeline.choosing import EMPTY_ROWS, Rows
from papermail.pipeline.pieces import Pick
from papermail.pipeline.relevance import Pool, ReaderProfile, Scorer
from papermail.pipeline.text import counted

if TYPE_CHECKING:
    from papermail.pipeline.tfidf import TfidfScorer

CACHE_LIMIT = 10_000  # distinct follows / category choices remembered per planning run
BATCH_CELLS = 1 << 20  # readers × pool papers scored in one batch


@dataclass(frozen=True, slots=True)
class Ask:
    """One reader's request: who they are, how many papers, what else rules papers out."""

    reader: ReaderProfile
    k: int
    categories: tuple[str, ...] = ()  # arXiv categories they follow
    seen: Collection[str] = ()  # papers other editions sent them


@dataclass(frozen=True, slots=True)
class PoolPaper:
    """What picking reads of one pool paper."""

    paper: relevance.Paper
    trending: float  # the edition's trending score: higher is more trending
    upvotes: int = 0
    categories: tuple[str, ...] = ()
    arxiv_only: bool = False  # new on arXiv, not (yet) on the trending list


def planning_scorer() -> TfidfScorer:
    """The scorer planning picks with (and the offline evaluation measures by default)."""
    # Imported here: scikit-learn and scipy cost a sending worker ~100 MB it never needs;
    # only planning fits a pool.
    from papermail.pipeline.tfidf import TfidfScorer

    # The closed-form profile: within a few points of the per-reader SVM on our evaluation
    # (docs/relevance.md) and ~5x cheaper, which a planner of 10^5 readers needs.
    return TfidfScorer(method="profile")


class EditionPicker:
    """One edition's pool, fitted once; the papers for any reader, with reasons."""

    def __init__(self, papers: Sequence[PoolPaper], *, scorer: Scorer | None = None) -> None:
        self.papers = tuple(papers)
        self.pool = Pool([p.paper for p in self.papers])
        self.scorer = planning_scorer() if scorer is None else scorer
        self.scorer.fit(self.pool.papers)
        self.trending = Trending.of([p.trending for p in self.papers])
        self._arxiv_only = [i for i, p in enumerate(self.papers) if p.arxiv_only]
        self._follows: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[int, str]] = {}
        self._outside: dict[tuple[str, ...], Rows] = {}  # by followed categories
        self._arxiv_lines: dict[tuple[int, tuple[str, ...]], str] = {}

    def pick(
        self,
        reader: ReaderProfile,
        *,
        k: int,
        categories: Collection[str] = (),
        seen: Collection[str] = (),
    ) -> tuple[Pick, ...]:
        """The reader's ``k`` papers, best first, each with why it was picked.

        ``categories``: arXiv categories the reader follows; a paper that is new on arXiv
        and not trending is a candidate only in one of them. ``seen``: papers already
        sent to this reader (by another edition), never sent again.
        """
        return self.pick_many([Ask(reader, k, tuple(categories), seen)])[0]

    def pick_many(self, asks: Sequence[Ask]) -> list[tuple[Pick, ...]]:
        """Many readers' papers at once (``pick`` for each, as matrix operations)."""
        if not self.papers:
            return [() for _ in asks]
        # A batch's matrices are (readers × pool) floats; ~1M cells (8 MB) each keeps a
        # planner's memory flat while the per-call overhead is spread over many readers.
        size = max(1, BATCH_CELLS // len(self.papers))
        if len(asks) > size:
            return [
                picks
                for start in range(0, len(asks), size)
                for picks in self.pick_many(asks[start : start + size])
            ]
        relevances = self.scorer.score_many([ask.reader for ask in asks])
        readers = [
            choosing.Reader(
                weight=ask.reader.weight,
                k=ask.k,
                followed=self._followed(ask.reader),
                blocked=self._blocked(ask),
                excluded=self._outside_of(ask.categories),
            )
            for ask in asks
        ]
        chosen = choosing.choose_many(
            relevances,
            self.trending,
            readers,
            ids=self.pool.ids,
            says=self.pool.says,
            decorate=self._with_votes,
        )
        reasons = chosen.reasons
        if self._arxiv_only:  # their line names the reader's category: one by one
            reasons = list(reasons)
            for i, ask in enumerate(asks):
                for j in range(chosen.bounds[i], chosen.bounds[i + 1]):
                    row = chosen.rows[j]
                    if chosen.evidence[j] == "trending" and self.papers[row].arxiv_only:
                        reasons[j] = self._new_on_arxiv(row, ask.categories)
        # Every pick's (paper, why-line) pair in one pass, then each reader's run of them.
        ids = self.pool.ids
        pairs = list(zip([ids[row] for row in chosen.rows], reasons, strict=True))
        bounds = chosen.bounds
        return [tuple(pairs[bounds[i] : bounds[i + 1]]) for i in range(len(asks))]

    def _followed(self, reader: ReaderProfile) -> dict[int, str]:
        key = (reader.follow_organizations, reader.follow_authors)
        if not key[0] and not key[1]:
            return {}
        if (found := self._follows.get(key)) is None:
            if len(self._follows) >= CACHE_LIMIT:  # typed by readers: bound what is kept
                self._follows.clear()
            found = self._follows[key] = self.pool.followed(reader)
        return found

    def _blocked(self, ask: Ask) -> list[int]:
        """Muted, marked and already sent: this reader's own."""
        rows = list(self.pool.blocked(ask.reader)) if _mutes_or_marks(ask.reader) else []
        rows += [r for pid in ask.seen if (r := self.pool.row(pid)) is not None]
        return rows

    def _outside_of(self, categories: tuple[str, ...]) -> Rows:
        """Papers new on arXiv in none of ``categories``: one array for every reader who
        follows the same ones."""
        if not self._arxiv_only:
            return EMPTY_ROWS
        if (outside := self._outside.get(categories)) is None:
            if len(self._outside) >= CACHE_LIMIT:
                self._outside.clear()
            wanted = set(categories)
            outside = self._outside[categories] = np.array(
                [r for r in self._arxiv_only if not wanted.intersection(self.papers[r].categories)],
                dtype=np.intp,
            )
        return outside

    def _with_votes(self, row: int, line: str) -> str:
        """A trending pick's why-line with its votes ("#3 trending · 38 upvotes")."""
        paper = self.papers[row]
        return f"{line} · {counted(paper.upvotes, 'upvote')}" if paper.upvotes else line

    def _new_on_arxiv(self, row: int, categories: tuple[str, ...]) -> str:
        """A new-on-arXiv pick's why-line, naming the first of its categories the reader
        follows. Cached, so a chunk's selections share a few hundred strings."""
        key = (row, categories)
        if (found := self._arxiv_lines.get(key)) is None:
            if len(self._arxiv_lines) >= CACHE_LIMIT:
                self._arxiv_lines.clear()
            shared = [c for c in self.papers[row].categories if c in categories]
            found = f"New on arXiv in {shared[0]}, which you follow" if shared else "New on arXiv"
            self._arxiv_lines[key] = found
        return found


def _mutes_or_marks(reader: ReaderProfile) -> bool:
    return bool(
        reader.muted_authors or reader.muted_organizations or reader.liked or reader.disliked
    )
