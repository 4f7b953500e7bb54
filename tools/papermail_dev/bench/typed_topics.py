"""--typed-topics: readers who type their own topics, as a real list's readers do.

By default the bench's readers pick their topics from twelve (scratch.TOPICS), so planning
works out twelve topics once and reads them back for every reader. A real list's readers
type what they like ("diffusion policy", "sparse attention", "LLM agents"): a hundred
thousand readers state thousands of distinct topics, and what planning does once a topic
is done that many times.

The topics are phrases of one to three words that follow one another in the pool's own
titles and abstracts (after dropping a short list of function words), so most of them
match some paper, as a typed topic does. Each reader types 0-2 of them, drawn uniformly:
the worst case for planning's memo of topics (a real list shares its popular topics more).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

PHRASE_WORDS = (1, 2, 3)
WORD = re.compile(r"[a-z][a-z0-9-]{2,}")
# Words nobody types as a topic, nor in one.
FUNCTION_WORDS = frozenset(
    (  # noqa: SIM905 (words read best as words)
        "the and for with from that this are our which its into than their these such can "
        "has have been was were not but also via using both each more most other over under "
        "between while when where how what all any only new show shows propose proposed "
        "based paper approach method methods results"
    ).split()
)


class TypedTopicsError(ValueError):
    """The pool's texts cannot give the topics asked for: the message says why."""


def topic_phrases(texts: Iterable[str], count: int, *, seed: int) -> tuple[str, ...]:
    """``count`` distinct phrases of the texts, in an order of their own for ``seed``."""
    if count < 1:
        raise TypedTopicsError(f"--typed-topics must be at least 1, not {count}")
    phrases: dict[str, None] = {}
    for text in texts:
        words = [w for w in WORD.findall(text.casefold()) if w not in FUNCTION_WORDS]
        for n in PHRASE_WORDS:
            for i in range(len(words) - n + 1):
                phrases[" ".join(words[i : i + n])] = None
    if len(phrases) < count:
        raise TypedTopicsError(
            f"the edition's papers give {len(phrases):,} distinct topics, fewer than the "
            f"{count:,} asked (--arxiv-pool adds papers, and with them topics)"
        )
    rng = random.Random(f"{seed}:typed-topics")
    return tuple(rng.sample(sorted(phrases), count))
