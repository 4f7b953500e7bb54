"""Each reader's papers for one edition: learned relevance blended with trending.

``EditionPicker`` is built once per edition and planning run: the edition's whole pool
(every paper ingested for its window, in trending order) fitted by the scorer once.
``pick`` then chooses one reader's papers (relevance.choose) with why-lines, never one
they disliked, muted or were already sent. Pure domain: the planner reads readers and
their feedback from the database and hands them in.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from papermail.pipeline import relevance
from papermail.pipeline.blending import Trending
from papermail.pipeline.pieces import Pick
from papermail.pipeline.relevance import Pool, ReaderProfile, Scorer
from papermail.pipeline.text import counted


@dataclass(frozen=True, slots=True)
class PoolPaper:
    """What picking reads of one pool paper."""

    paper: relevance.Paper
    trending: float  # the edition's trending score: higher is more trending
    upvotes: int = 0
    categories: tuple[str, ...] = ()
    arxiv_only: bool = False  # new on arXiv, not (yet) on the trending list


class EditionPicker:
    """One edition's pool, fitted once; the papers for any reader, with reasons."""

    def __init__(self, papers: Sequence[PoolPaper], *, scorer: Scorer | None = None) -> None:
        self.papers = tuple(papers)
        self.pool = Pool([p.paper for p in self.papers])
        if scorer is None:
            # Imported here: scikit-learn and scipy cost a sending worker ~100 MB it never
            # needs; only planning fits a pool.
            from papermail.pipeline.tfidf import TfidfScorer

            # The closed-form profile: as precise as the per-reader SVM on our evaluation
            # (docs/relevance.md) and ~5x cheaper, which a planner of 10^5 readers needs.
            scorer = TfidfScorer(method="profile")
        self.scorer = scorer
        self.scorer.fit(self.pool.papers)
        self.trending = Trending.of([p.trending for p in self.papers])
        self._arxiv_only = [i for i, p in enumerate(self.papers) if p.arxiv_only]

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
        if not self.papers or k <= 0:
            return ()
        blocked = set(seen)
        wanted = set(categories)
        for row in self._arxiv_only:
            if not wanted.intersection(self.papers[row].categories):
                blocked.add(self.pool.ids[row])
        picks = relevance.choose(
            self.pool, self.scorer.score(reader), self.trending, reader, k=k, exclude=blocked
        )
        # Interned: a chunk's thousands of selections repeat the same few hundred lines.
        return tuple((p.paper_id, sys.intern(self._reason(p, wanted))) for p in picks)

    def _reason(self, pick: relevance.Pick, categories: set[str]) -> str:
        row = self.pool.row(pick.paper_id)
        assert row is not None  # choose picks from the pool
        paper = self.papers[row]
        if pick.evidence != "trending":
            return pick.reason
        if paper.arxiv_only:
            shared = [c for c in paper.categories if c in categories]
            return f"New on arXiv in {shared[0]}, which you follow" if shared else "New on arXiv"
        if paper.upvotes:
            return f"{pick.reason} · {counted(paper.upvotes, 'upvote')}"
        return pick.reason
