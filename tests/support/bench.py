"""What the bench's integration tests share."""

from __future__ import annotations

from papermail import stages
from papermail.clock import utcnow
from papermail.wiring import Wiring
from papermail_dev.bench.run import CountingDispatcher


def plan_everyone(w: Wiring, edition_id: int) -> None:
    """Plan the edition for every reader now, due or not, publishing nowhere (as
    --plan-only does)."""
    stages.plan(
        w, dispatcher=CountingDispatcher(), now=utcnow(), due_only=False, edition_ids=[edition_id]
    )
