"""What the bench's integration tests share."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail import stages
from papermail.clock import utcnow
from papermail.models import Delivery, Variant
from papermail.wiring import Wiring
from papermail_dev.bench.run import CountingDispatcher


def plan_everyone(w: Wiring, edition_id: int) -> None:
    """Plan the edition for every reader now, due or not, publishing nowhere (as
    --plan-only does)."""
    stages.plan(
        w, dispatcher=CountingDispatcher(), now=utcnow(), due_only=False, edition_ids=[edition_id]
    )


def planned_picks(session: Session) -> dict[int, list[tuple[str, str]]]:
    """Each planned reader's picks: (paper id, why-line), in their digest's order."""
    return {
        d.subscriber_id: [(pick[0], pick[1]) for pick in v.selection]
        for d, v in session.execute(
            select(Delivery, Variant).join(Variant, Variant.key == Delivery.variant_key)
        )
    }
