"""--arxiv-pool: the edition's pool at the size an operator who ingests arXiv gets.

The bundled sample is one Hugging Face day, 40 papers. An operator whose readers follow
arXiv categories also gets each day's new submissions: hundreds of papers a day, and a
daily edition's window is two days. Planning scores every reader against the whole pool,
so its cost grows with it; this puts real papers from a corpus of the evaluation's shape
(../shared/corpus/README.md), read in place, into the edition's window as new on arXiv,
and has readers follow arXiv categories as such readers do.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from papermail.sources.arxiv_entries import ArxivPaperIn
from papermail.sources.base import FetchResult, PaperIn, rejection_reason
from papermail_dev.evaluate.corpus import CorpusError, CorpusPaper, load

FOLLOWED_FIELDS = 6  # readers follow some of the pool's six biggest primary categories
FOLLOWS = (0, 1, 1, 2)  # categories a reader follows, drawn from these


class ArxivPoolError(ValueError):
    """The corpus cannot give the pool asked for: the message says why."""


@dataclass(frozen=True, slots=True)
class ArxivPool:
    corpus: Path  # one JSON object a line: id, title, abstract, authors, categories, primary
    papers: int  # how many of its papers (the first, in the file's order) join the pool


def arxiv_papers(
    pool: ArxivPool, *, published_at: dt.datetime, exclude: Collection[str] = ()
) -> FetchResult:
    """The corpus's first ``pool.papers`` papers (skipping ids in ``exclude``) as the arXiv
    ingest would store them, all announced at ``published_at``.

    ArxivPoolError when the corpus cannot be read, has fewer papers than asked, or has one
    arXiv's own rules would reject (the message names it): a bench with a smaller pool
    than it says would report figures for a pool it did not plan.
    """
    if pool.papers < 1:
        raise ArxivPoolError(f"--arxiv-papers must be at least 1, not {pool.papers}")
    try:
        corpus = load(pool.corpus)
    except (OSError, UnicodeDecodeError, CorpusError) as exc:
        raise ArxivPoolError(f"cannot read the corpus {pool.corpus}: {exc}") from exc
    chosen = [p for p in corpus if p.id not in exclude][: pool.papers]
    if len(chosen) < pool.papers:
        raise ArxivPoolError(
            f"{pool.corpus} has {len(chosen)} papers to add, fewer than the {pool.papers} asked"
        )
    papers: list[PaperIn] = []
    for paper in chosen:
        try:
            papers.append(_as_ingested(paper, published_at))
        except ValidationError as exc:
            raise ArxivPoolError(
                f"{pool.corpus}: paper {paper.id!r} is not one arXiv lists: {rejection_reason(exc)}"
            ) from exc
    return FetchResult(papers=papers, rejected=[], pages=1)


def _as_ingested(paper: CorpusPaper, published_at: dt.datetime) -> ArxivPaperIn:
    seen = paper.paper  # what arXiv publishes: the primary category first
    return ArxivPaperIn(
        id=seen.paper_id,
        title=seen.title,
        summary=seen.abstract,
        authors=list(seen.authors),
        published_at=published_at,
        categories=list(seen.categories),
    )


def followed_fields(papers: Sequence[PaperIn]) -> tuple[str, ...]:
    """The primary categories readers follow: the pool's biggest, most papers first."""
    counts = Counter(
        p.categories[0] for p in papers if isinstance(p, ArxivPaperIn) and p.categories
    )
    return tuple(code for code, _ in counts.most_common(FOLLOWED_FIELDS))


def reader_categories(count: int, *, seed: int, fields: Sequence[str]) -> Iterator[str]:
    """Each reader's arXiv categories (a JSON list: the column's form), 0-2 of ``fields``,
    from a stream of their own, so the rest of the subscriber rows stay what they are."""
    rng = random.Random(f"{seed}:arxiv-categories")
    for _ in range(count):
        follows = min(rng.choice(FOLLOWS), len(fields))
        yield json.dumps(rng.sample(list(fields), follows))
