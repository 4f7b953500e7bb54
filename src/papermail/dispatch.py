"""The one seam for "run this later".

Domain code and operator actions never know where work runs: they take a Dispatcher
and call it after their changes are committed (a task must never name rows a worker
cannot see yet). The shells choose the implementation: workers/dispatch.py queues
Celery tasks; papermail.stages.InlineDispatcher runs the work right here (embedded
mode, the demo, tests).
"""

from __future__ import annotations

from typing import Protocol

PIPELINE_QUEUE = "papermail.pipeline"  # ingest, editions, planning, rendering: short, rare
SEND_QUEUE = "papermail.send"  # send batches and confirmations: the bulk; scale these out
QUEUES = (PIPELINE_QUEUE, SEND_QUEUE)


class Dispatcher(Protocol):
    @property
    def queued(self) -> bool:
        """True when work goes to workers (later, elsewhere); False when it ran already."""
        ...

    def send_batch(self, delivery_ids: list[int]) -> None:
        """Deliver these ledger rows."""
        ...

    def send_confirmation(self, subscriber_id: int) -> None:
        """Email this pending subscriber their confirmation link."""
        ...

    def ingest(self) -> str | None:
        """Fetch papers now; the task id when queued, None when it ran here."""
        ...
