"""The garbage collector, set for long-running workers that plan and send.

CPython runs a collection every 700 new container objects (tuples, dicts, lists), and
older generations' collections walk every object that survived, the imported libraries
included. Planning 100,000 readers and sending their digests allocate tens of millions
of short-lived containers, nearly all freed by reference counting at once; the
collections found next to nothing and cost 30% of planning's CPU and 20% of sending's
(docs/performance.md, "Sixth day").

``tune`` freezes what the process holds now (modules, configuration: never garbage) into
the permanent generation, which no collection walks, and collects the youngest
generation every 50,000 new containers. Only reference cycles wait longer to be freed.

In a sending process that wait was long: reference counting frees nearly everything a
message allocates, so the count of new containers grew by less than one a message, and
what did not go were the cycles among the SQL expressions each batch builds. ~50,000 of
them (~80,000 messages' worth) waited for a collection: 20 MB or more a process, and
pymalloc keeps the memory once it is freed. ``after_batch`` frees each batch's cycles as
it ends, walking only what the batch left behind.
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


FULL_EVERY = 100  # units of work between full collections (cycles among older objects)
_units = 0


def after_batch() -> None:
    """Free what one unit of work left in reference cycles (a send batch: see above);
    the two young generations hold only what was made since the last call. Every
    ``FULL_EVERY``-th call collects everything not frozen: what became garbage after it
    grew old (an evicted cache entry in a cycle) would otherwise wait for good, since the
    young threshold is never reached between calls."""
    global _units
    _units += 1
    gc.collect(2 if _units % FULL_EVERY == 0 else 1)
