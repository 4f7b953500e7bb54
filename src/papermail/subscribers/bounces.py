"""The bounce policy: what a permanent failure does to the subscriber it was sent to.

One rule for every kind of mail, digests and confirmations alike:

- a permanent failure (a 5xx reply: ``PermanentError``) counts one bounce;
- once the count reaches the threshold, the subscriber is suppressed, and nothing is
  mailed to a suppressed address again, not even a confirmation (otherwise the sign-up
  form could keep mailing a dead or hostile mailbox);
- a transient failure (a 4xx, a timeout, a dropped connection) counts nothing.

Suppression replaces only the status the message was sent under: if the subscriber's
status changed while the message was out (an unsubscribe racing a digest's bounce),
their newer word stands. The count goes up either way.

Which failure is which is decided in one place too: ``papermail.pipeline.sending.classify``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, update
from sqlalchemy.orm import Session

from papermail.models import Subscriber, SubscriberStatus


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    threshold: int = 3  # bounces; Settings.bounce_threshold

    def record(
        self, db: Connection | Session, subscriber_id: int, *, sent_as: SubscriberStatus
    ) -> None:
        """Count one bounce for ``subscriber_id``; suppress them if it reaches the threshold.

        ``sent_as`` is the subscriber's status when the message was sent. Two statements,
        each atomic in SQL, so concurrent bounces never lose a count. On a Session the
        subscriber object in it (if any) is updated too. Does not commit.
        """
        db.execute(
            update(Subscriber)
            .where(Subscriber.id == subscriber_id)
            .values(bounce_count=Subscriber.bounce_count + 1)
        )
        db.execute(
            update(Subscriber)
            .where(
                Subscriber.id == subscriber_id,
                Subscriber.bounce_count >= self.threshold,
                Subscriber.status == sent_as,
            )
            .values(status=SubscriberStatus.SUPPRESSED)
        )
