"""The bounce policy: what a bounce or a complaint does to the subscriber it names.

One rule for every kind of mail, digests and confirmations alike, and for every way a
bounce reaches us (a reply in the SMTP session, or later: a DSN, a webhook, see
papermail/bounces/):

- a permanent failure counts one bounce; once the count reaches the threshold, the
  subscriber is suppressed, and nothing is mailed to a suppressed address again, not
  even a confirmation (otherwise the sign-up form could keep mailing a dead or hostile
  mailbox). In the session that is a 5xx reply (``PermanentError``): it may be a relay's
  policy refusal that says nothing about the mailbox, hence the count;
- a late permanent failure (a 5.x.x DSN) that says the *address* is bad (5.1.x: no such
  mailbox, no such domain; 5.2.1: mailbox disabled), or gives no status at all, suppresses
  at once: that is the receiving server's verdict on the recipient, and a matched bounce
  (a signed VERP address, or our Message-ID with the right recipient) cannot be forged.
  Any other late permanent failure (5.7.1 content refused, 5.4.x routing, ...) counts one
  bounce like a 5xx in the session;
- a transient failure (a 4xx, a timeout, a dropped connection) counts nothing in the
  session; a late one (a 4.x.x DSN: mailbox full, delayed) adds ``soft_weight`` to a
  score in which each soft bounce's weight halves every ``decay_days``; the subscriber is
  suppressed once the score reaches ``score_threshold`` (Mailman's scoring, with a smooth
  decay in place of its reset after a quiet week). An operator's unsuppress starts the
  score again from zero, as it does the count;
- a complaint (the reader pressed "spam") unsubscribes and suppresses at once.

Suppression replaces only the status the message was sent under: if the subscriber's
status changed while the message was out (an unsubscribe racing a digest's bounce),
their newer word stands. The count goes up either way.

Which failure is which is decided in one place too: ``papermail.pipeline.outcomes.classify``
in the session, ``papermail.bounces.reports`` afterwards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, func, or_, select, update
from sqlalchemy.orm import Session

from papermail.models import AuditEntry, BounceEvent, BounceKind, Subscriber, SubscriberStatus
from papermail.subscribers.audit import Action
from papermail.subscribers.subscriptions import unsubscribe

# The enhanced status codes (RFC 3463) that say the address itself is bad.
ADDRESS_GONE_CLASSES = ("5.1.",)
ADDRESS_GONE_CODES = frozenset({"5.2.1"})
# Soft bounces older than this many half-lives weigh under 0.1%: not read.
SCORE_HORIZON_HALF_LIVES = 10
DAY_SECONDS = 86400.0
UNSUPPRESS = Action.UNSUPPRESS.value


def address_gone(status: str | None) -> bool:
    """Whether a late permanent failure says the address is bad (or says nothing else)."""
    return status is None or status.startswith(ADDRESS_GONE_CLASSES) or status in ADDRESS_GONE_CODES


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    threshold: int = 3  # permanent failures; Settings.bounce_threshold
    score_threshold: float = 5.0  # Settings.bounce_score_threshold
    soft_weight: float = 1.0  # Settings.bounce_soft_weight
    decay_days: float = 7.0  # a soft bounce's half-life; Settings.bounce_decay_days

    def record(
        self, db: Connection | Session, subscriber_id: int, *, sent_as: SubscriberStatus
    ) -> None:
        """Count one bounce for ``subscriber_id``; suppress them if it reaches the threshold.

        ``sent_as`` is the subscriber's status when the message was sent. Two statements,
        each atomic in SQL, so concurrent bounces never lose a count. On a Session the
        subscriber object in it (if any) is updated too. Does not commit.
        """
        self.record_late_hard(db, subscriber_id, sent_as=(sent_as,), status="5.0.0")

    def record_late_hard(
        self,
        db: Connection | Session,
        subscriber_id: int,
        *,
        sent_as: Collection[SubscriberStatus],
        status: str | None,
    ) -> bool:
        """A permanent failure reported after the session (a 5.x.x DSN, a webhook): count
        it, and suppress at once if ``address_gone(status)``, else at the threshold.
        ``sent_as``: the statuses the message may have been sent under. Whether the
        subscriber is suppressed now. Does not commit."""
        db.execute(
            update(Subscriber)
            .where(Subscriber.id == subscriber_id)
            .values(bounce_count=Subscriber.bounce_count + 1)
        )
        at_once = address_gone(status)
        return self._suppress(
            db,
            subscriber_id,
            sent_as=sent_as,
            when=None if at_once else Subscriber.bounce_count >= self.threshold,
        )

    def record_soft(
        self,
        db: Connection | Session,
        subscriber_id: int,
        *,
        sent_as: Collection[SubscriberStatus],
        now: dt.datetime,
    ) -> tuple[float, bool]:
        """Score the subscriber's soft bounces (the one just stored included) and suppress
        them if the score reaches the threshold: (the score, whether that suppressed them).
        Does not commit."""
        horizon = now - dt.timedelta(days=self.decay_days * SCORE_HORIZON_HALF_LIVES)
        # Soft bounces from before an operator unsuppressed them were forgiven with it.
        unsuppressed = (
            select(func.max(AuditEntry.at))
            .where(AuditEntry.subscriber_id == subscriber_id, AuditEntry.action == UNSUPPRESS)
            .scalar_subquery()
        )
        seen = db.execute(
            select(BounceEvent.received_at).where(
                BounceEvent.subscriber_id == subscriber_id,
                BounceEvent.kind == BounceKind.SOFT,
                BounceEvent.received_at > horizon,
                or_(unsuppressed.is_(None), BounceEvent.received_at > unsuppressed),
            )
        ).scalars()
        score = self.soft_score(now - at for at in seen)
        suppressed = score >= self.score_threshold and self._suppress(
            db, subscriber_id, sent_as=sent_as
        )
        return score, suppressed

    def soft_score(self, ages: Iterable[dt.timedelta]) -> float:
        """Each soft bounce's weight, halved for every ``decay_days`` of its age."""
        half_life = self.decay_days * DAY_SECONDS
        return sum(
            self.soft_weight * 0.5 ** (max(0.0, age.total_seconds()) / half_life) for age in ages
        )

    def record_complaint(
        self, session: Session, subscriber: Subscriber, *, now: dt.datetime
    ) -> None:
        """The reader called our mail spam: unsubscribe them (every unsent delivery
        skipped, links revoked) and suppress the address. Flushes, does not commit."""
        unsubscribe(session, subscriber, now=now, reason="complaint: marked as spam")
        subscriber.status = SubscriberStatus.SUPPRESSED
        session.flush()

    def _suppress(
        self,
        db: Connection | Session,
        subscriber_id: int,
        *,
        sent_as: Collection[SubscriberStatus],
        when: ColumnElement[bool] | None = None,
    ) -> bool:
        conditions = [Subscriber.id == subscriber_id, Subscriber.status.in_(list(sent_as))]
        if when is not None:
            conditions.append(when)
        result = db.execute(
            update(Subscriber).where(*conditions).values(status=SubscriberStatus.SUPPRESSED)
        )
        return bool(getattr(result, "rowcount", 0))
