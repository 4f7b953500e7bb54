"""Re-queue rows that need a (new) send task: retries now due, expired leases, lost tasks.

Planning publishes each row once; this sweep (beat, every minute) is how a row whose task
was lost with its broker, whose retry came due, or whose worker died mid-lease gets a
task again. Claims (claims.py) still guard against any double send.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from papermail.models import Delivery, DeliveryStatus
from papermail.pipeline.planning import Publish


def redispatch_due(
    session: Session,
    *,
    now: dt.datetime,
    batch_size: int,
    publish: Publish,
    stale_after: dt.timedelta = dt.timedelta(minutes=15),
    limit: int = 50_000,
) -> int:
    """Publish rows that need a (new) send task: retries now due, expired leases, lost tasks.

    ``dispatched_at`` marks rows already handed to a queued task, so a sweep
    does not queue them twice; a task lost with its broker is re-queued once the
    mark goes stale. Claims still guard against any double send.
    """
    retryable = and_(
        Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRY]),
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        or_(Delivery.dispatched_at.is_(None), Delivery.dispatched_at < now - stale_after),
    )
    abandoned = and_(
        Delivery.status == DeliveryStatus.SENDING,
        Delivery.lease_until < now,
        or_(Delivery.dispatched_at.is_(None), Delivery.dispatched_at < now - stale_after),
    )
    ids = sorted(
        session.scalars(
            select(Delivery.id).where(or_(retryable, abandoned)).order_by(Delivery.id).limit(limit)
        )
    )
    for start in range(0, len(ids), 1000):
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids[start : start + 1000]))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    for start in range(0, len(ids), batch_size):
        publish(ids[start : start + batch_size])
    return len(ids)
