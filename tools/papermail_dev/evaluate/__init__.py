"""Offline evaluation of papermail's learned relevance against two baselines.

    python -m papermail_dev.evaluate CORPUS.jsonl [--days N --readers N --seed S --out report.json]

Replays an arXiv corpus (../shared/corpus/README.md) day by day to simulated readers with
hidden interests and reports mean precision@10 per day for papermail (learned relevance
blended with trending), topic-match (today's selection) and trending-only. See
docs/relevance.md for the method and the results.

    corpus.py      the corpus file and its daily editions
    readers.py     simulated readers: interests, typed topics, clicks
    popularity.py  simulated upvotes and the trending order
    replay.py      the day-by-day replay and the report
    timing.py      per-reader scoring time on a 2,000-paper pool
    cli.py         the command line: table on stdout, JSON with --out
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from papermail_dev.evaluate.replay import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate"]


def __getattr__(name: str) -> object:
    # Imported on first use: the replay loads scikit-learn, and the bench reads a corpus
    # (corpus.py) in the process whose import of the relevance model it times.
    if name in __all__:
        from papermail_dev.evaluate import replay

        return getattr(replay, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
