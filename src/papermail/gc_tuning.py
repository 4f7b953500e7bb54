"""The garbage collector, set for long-running workers that plan and send.

CPython runs a collection every 700 new container objects (tuples, dicts, lists), and
older generations' collections walk every object that survived, the imported libraries
included. Planning 100,000 readers and sending their digests allocate tens of millions
of short-lived containers, nearly all freed by reference counting at once; the
collections found next to nothing and cost 30% of planning's CPU and 20% of sending's
(docs/performance.md, "Sixth day").

``tune`` freezes what the process holds now (modules, configuration: never garbage) into
the permanent generation, which no collection walks, and collects the youngest
generation every 50,000 new containers. Only reference cycles wait longer to be freed:
at most 50,000 objects' worth, a few MB.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune() -> None:
    """Call once a process is set up (a Celery pool process after the fork, the bench)."""
    gc.collect()  # garbage of the start-up must not be frozen with it
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
