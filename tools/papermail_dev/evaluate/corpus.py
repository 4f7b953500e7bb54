"""The corpus: arXiv listings, one JSON object a line, replayed as daily editions.

Shape (../shared/corpus/README.md)::

    {"id": "2506.01234", "title": "...", "abstract": "...", "authors": ["..."],
     "categories": ["cs.RO", ...], "primary": "cs.RO", "listed": "2025-06-09"}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from papermail.pipeline.relevance import Paper


class CorpusError(ValueError):
    """A line that is not a paper of the documented shape."""


@dataclass(frozen=True, slots=True)
class CorpusPaper:
    id: str
    title: str
    abstract: str
    authors: tuple[str, ...]
    categories: tuple[str, ...]
    primary: str
    listed: str  # YYYY-MM-DD

    @property
    def paper(self) -> Paper:
        """What papermail sees: what arXiv publishes (text, authors, categories with the
        primary first), never the reader's interests."""
        rest = tuple(c for c in self.categories if c != self.primary)
        return Paper(
            paper_id=self.id,
            title=self.title,
            abstract=self.abstract,
            authors=self.authors,
            categories=(self.primary, *rest),
        )

    @property
    def words_only(self) -> Paper:
        """As a paper arXiv has not described: text and authors (``--no-categories``)."""
        return Paper(
            paper_id=self.id, title=self.title, abstract=self.abstract, authors=self.authors
        )


@dataclass(frozen=True, slots=True)
class Edition:
    day: str  # the listing day that closes the edition
    papers: tuple[CorpusPaper, ...]


def load(path: str | Path) -> list[CorpusPaper]:
    papers: dict[str, CorpusPaper] = {}
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                paper = CorpusPaper(
                    id=str(raw["id"]),
                    title=" ".join(str(raw["title"]).split()),
                    abstract=" ".join(str(raw.get("abstract") or "").split()),
                    authors=tuple(str(a) for a in raw.get("authors") or ()),
                    categories=tuple(str(c) for c in raw.get("categories") or ()),
                    primary=str(raw["primary"]),
                    listed=str(raw["listed"])[:10],
                )
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CorpusError(f"{path}:{number}: not a corpus paper ({exc})") from exc
            papers.setdefault(paper.id, paper)  # a paper listed twice counts once, first day
    return list(papers.values())


def editions(papers: Iterable[CorpusPaper], *, min_papers: int) -> list[Edition]:
    """One edition per listing day, in day order; papers in id order (deterministic).

    A day with fewer than ``min_papers`` papers (a weekend crawl with two stragglers)
    makes no email of its own: its papers roll into the next day's edition, the last
    day's into the one before. Otherwise every system would show the same two papers and
    the day would say nothing about any of them.
    """
    by_day: dict[str, list[CorpusPaper]] = {}
    for paper in papers:
        by_day.setdefault(paper.listed, []).append(paper)
    grouped: list[tuple[str, list[CorpusPaper]]] = []
    carried: list[CorpusPaper] = []
    for day in sorted(by_day):
        pending = carried + by_day[day]
        if len(pending) >= min_papers:
            grouped.append((day, pending))
            carried = []
        else:
            carried = pending
    if carried:
        if grouped:
            grouped[-1][1].extend(carried)
        else:
            grouped.append((max(p.listed for p in carried), carried))
    return [Edition(day, tuple(sorted(ps, key=lambda p: p.id))) for day, ps in grouped]


def primaries(papers: Sequence[CorpusPaper]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for paper in papers:
        counts[paper.primary] = counts.get(paper.primary, 0) + 1
    return counts
