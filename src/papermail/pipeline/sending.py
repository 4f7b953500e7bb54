"""Sending digests: a batch of planned deliveries, exactly once each.

Each message ends one way of four, as ``outcomes.classify`` decides for all mail alike
(outcomes.py also sends single messages: confirmations, test sends).

``send_batch`` claims ledger rows (see claims.py), and after the server's 250 marks a row
sent and commits at once, so the only window in which a crash can cause a second copy is
between that 250 and that commit, one message wide. A batch that runs past its lease
stops, so a reclaimed row is never sent by two workers at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.clock import Clock
from papermail.delivery.base import (
    DeliveryError,
    MailBackend,
    MailConnection,
    OutgoingMessage,
)
from papermail.logging_setup import log_context
from papermail.models import Edition, SubscriberStatus
from papermail.pipeline.claims import (
    Row,
    RowOutcomes,
    claim_rows,
    ledger_connection,
    no_longer_active,
)
from papermail.pipeline.encoding import DateHeaders
from papermail.pipeline.ledger import LedgerError
from papermail.pipeline.messages import make_message_id
from papermail.pipeline.outcomes import Outcome, classify
from papermail.pipeline.ratelimit import RateLimiter
from papermail.pipeline.variants import Identity, TemplateSource
from papermail.subscribers.bounces import BouncePolicy
from papermail.subscribers.tokens import Links

log = logging.getLogger(__name__)

PAUSE_CHECK_EVERY = 10  # messages; a pause takes effect within this many sends
# Unsubscribes mid-batch: the batch's subscribers' statuses are read again once a second
# of sending (a database round trip and a commit; at full speed a batch of 100 ends before
# one is due, and reading them every 25 messages cost a tenth of a sender's time).
STATUS_CHECK_INTERVAL = dt.timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class SendPolicy:
    max_attempts: int = 5
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 6 * 3600.0
    bounce_threshold: int = 3  # see BouncePolicy
    lease_seconds: int = 300
    # PostgreSQL only. True: a "sent" mark is acknowledged before it reaches disk, so a
    # crash of the database server (not of a worker) can forget the last ~0.6 s of marks
    # and those messages are sent again. Never a loss; about 3x less database work a mark.
    ledger_async_commit: bool = False
    # Stop this long before the lease ends: at least one slow SMTP exchange (several
    # timeouts' worth), so no message can still be in flight when the row is reclaimed.
    lease_margin_seconds: float = 30.0

    def backoff(self, attempts: int, rng: random.Random | None = None) -> dt.timedelta:
        """Exponential, with +-50% jitter so retries of one outage don't stampede."""
        base = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(0, attempts - 1))
        return dt.timedelta(seconds=base * (rng or random).uniform(0.5, 1.5))


@dataclass
class BatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    released: int = 0
    paused: bool = False
    backend_down: bool = False  # the relay refused us as a whole; the rest was released
    coordination_down: bool = False  # Redis (rate limit, pause flag) failed; rest released

    @property
    def stopping(self) -> bool:
        """Stop now and hand the unsent rows back for another batch."""
        return self.paused or self.backend_down or self.coordination_down

    def as_dict(self) -> dict[str, int]:
        """The counts a send task returns (and Flower shows)."""
        return {
            "sent": self.sent,
            "retried": self.retried,
            "failed": self.failed,
            "skipped": self.skipped,
            "released": self.released,
        }


Observe = Callable[[str, float | None], None]  # (outcome, SMTP seconds) -> None
Sign = Callable[[bytes], bytes]  # a whole message -> the same message, signed (DKIM)


def _ignore(_outcome: str, _seconds: float | None) -> None:
    return None


def send_batch(
    session: Session,
    *,
    delivery_ids: Sequence[int],
    backend: MailBackend,
    templates: TemplateSource,
    limiter: RateLimiter,
    links: Links,
    identity: Identity,
    policy: SendPolicy,
    clock: Clock,
    paused: Callable[[], bool] = lambda: False,
    observe: Observe = _ignore,
    sign: Sign | None = None,
) -> BatchReport:
    """Claim the rows among ``delivery_ids`` that are due, send each, record each.

    ``observe`` hears every message's outcome (sent, retry, failed, bounced, skipped)
    and its SMTP time, for metrics. ``sign`` (DKIM, delivery/dkim.py) takes each
    message's bytes and returns them signed.
    """
    report = BatchReport()
    if paused():
        report.paused = True
        return report
    claimed_at = clock()
    lease = dt.timedelta(seconds=policy.lease_seconds)
    rows = claim_rows(session, ids=delivery_ids, now=claimed_at, lease=lease)
    report.claimed = len(rows)
    if not rows:
        return report
    editions = {
        e.id: e
        for e in session.scalars(
            select(Edition).where(Edition.id.in_({r.edition_id for r in rows}))
        )
    }
    templates.prefetch(session, {r.variant_key for r in rows})  # every selection, one query
    session.commit()
    # Stop a margin before the lease ends (Settings guarantees lease >= 2 x margin); the
    # half-lease cap only matters for a SendPolicy built by hand with a longer margin.
    margin = dt.timedelta(seconds=policy.lease_margin_seconds)
    deadline = claimed_at + lease - min(margin, lease / 2)
    with (
        closing(backend.open()) as connection,
        ledger_connection(session, async_commit=policy.ledger_async_commit) as marks,
    ):
        bounces = BouncePolicy(threshold=policy.bounce_threshold)
        ledger = RowOutcomes(marks, clock=clock, bounces=bounces)
        batch = _Batch(
            session=session,
            connection=connection,
            ledger=ledger,
            policy=policy,
            clock=clock,
            report=report,
            editions=editions,
            templates=templates,
            links=links,
            identity=identity,
            observe=observe,
            sign=sign,
        )
        try:
            _send_rows(rows, batch, limiter, paused, deadline)
        except BaseException:
            ledger.abandon()
            raise
        ledger.settle()
    return report


def _send_rows(
    rows: list[Row],
    batch: _Batch,
    limiter: RateLimiter,
    paused: Callable[[], bool],
    deadline: dt.datetime,
) -> None:
    report, clock = batch.report, batch.clock
    statuses_read = clock()  # the claim read them just now
    for index, row in enumerate(rows):
        try:
            if row.subscriber_status is SubscriberStatus.ACTIVE:
                # Wait for the shared rate limit first, so the pause and lease checks
                # below judge the moment this message would really go out.
                limiter.acquire()
            if index % PAUSE_CHECK_EVERY == 0 and index:
                report.paused = paused()
            if clock() - statuses_read >= STATUS_CHECK_INTERVAL:
                # Someone who unsubscribed since the batch began gets nothing more.
                batch.left = no_longer_active(batch.session, rows[index:])
                statuses_read = clock()
        except Exception:  # the shared limiter / pause flag (Redis) is unreachable
            log.exception("rate limit or pause flag unavailable; handing the rest back")
            report.coordination_down = True
        if report.stopping or clock() >= deadline:
            batch.stop(rows[index:])
            break
        with log_context(
            delivery_id=row.id, subscriber_id=row.subscriber_id, edition_id=row.edition_id
        ):
            batch.send_one(row)


@dataclass
class _Batch:
    """What one batch's messages share while it runs."""

    session: Session
    connection: MailConnection
    ledger: RowOutcomes
    policy: SendPolicy
    clock: Clock
    report: BatchReport
    editions: dict[int, Edition]
    templates: TemplateSource
    links: Links
    identity: Identity
    observe: Observe
    left: dict[int, SubscriberStatus] = field(default_factory=dict)  # status changed mid-batch
    dates: DateHeaders = field(default_factory=DateHeaders)  # the Date header, once a second
    sign: Sign | None = None  # DKIM: each rendered message goes through it

    def stop(self, remaining: Sequence[Row]) -> None:
        """Hand every unsent row back without spending an attempt on it.

        Paused: they wait for resume. Relay or Redis down: they wait a retry interval
        first, so a long outage costs one connection attempt per batch per interval,
        not every row's attempts. Out of lease time: they go straight back (the lease
        is still ours, so nobody else has them yet).
        """
        ids = [r.id for r in remaining]
        not_before = None
        if self.report.backend_down or self.report.coordination_down:
            not_before = self.clock() + self.policy.backoff(1)
        elif not self.report.paused:
            log.warning("batch near the end of its lease; handing %d rows back", len(ids))
        self.ledger.release(ids, not_before=not_before)
        self.report.released += len(ids)

    def send_one(self, row: Row) -> None:
        status = self.left.get(row.subscriber_id, row.subscriber_status)
        if status is not SubscriberStatus.ACTIVE:
            self.ledger.skipped(row, skip_reason(status))
            self.report.skipped += 1
            self.observe("skipped", None)
            return
        # Stable across retries (a receiver can drop a repeat); an operator resend set a new one.
        message_id = row.message_id or make_message_id(
            domain=self.identity.domain, edition_id=row.edition_id, delivery_id=row.id
        )
        started: float | None = None
        try:
            data = self._message(row, message_id)
            started = time.perf_counter()
            self.connection.send(
                OutgoingMessage(
                    sender=self.identity.envelope_for(delivery_id=row.id),
                    recipient=row.email,
                    data=data,
                    message_id=message_id,
                    dot_safe=True,  # MessageTemplate.render never starts a line with "."
                ),
                # The previous message's mark commits before this one can be accepted:
                # never two messages past their 250 without a committed mark.
                before_accept=self.ledger.settle,
            )
        except LedgerError:
            raise  # the previous message's mark, not this message: stop the batch
        except Exception as error:  # a bug or bad data too: it must not sink the batch
            self._not_sent(row, error, _since(started))
        else:
            took = _since(started)
            self.ledger.sent(row, message_id)
            self.report.sent += 1
            self.observe("sent", took)

    def _not_sent(self, row: Row, error: Exception, took: float | None) -> None:
        """Record a failure as ``classify`` says; called while ``error`` is handled."""
        outcome = classify(error)
        if outcome is Outcome.BACKEND_DOWN:
            # Nothing was sent: this row goes back with the rest of the batch (stop()).
            log.error("delivery backend unavailable, stopping the batch: %s", error)
            self.report.backend_down = True
            self.stop([row])
        elif outcome is Outcome.BOUNCED:
            log.warning("delivery %s bounced: %s", row.id, error)
            self.ledger.bounced(row, error)
            self.report.failed += 1
            self.observe("bounced", took)
        else:
            if isinstance(error, DeliveryError):
                log.info("delivery %s will retry: %s", row.id, error)
            else:
                log.exception("delivery %s failed unexpectedly", row.id)
            self._retry_or_fail(row, error, took)

    def _message(self, row: Row, message_id: str) -> bytes:
        template = self.templates.get(
            self.session, row.variant_key, edition=self.editions[row.edition_id]
        )
        unsubscribe_url = self.links.unsubscribe(row.subscriber_id, row.token_version)
        values = {
            "email": row.email,
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": self.links.preferences(row.subscriber_id, row.token_version),
        }
        if template.feedback_slots:  # each card's two links end in a token for this reader
            tokens = self.links.signer.feedback_tokens(
                row.subscriber_id, payload_suffixes=template.feedback_payloads
            )
            values.update(zip(template.feedback_slots, tokens, strict=True))
        data = template.render(
            to=row.email,
            message_id=message_id,
            date=self.clock(),
            dates=self.dates,
            unsubscribe_url=unsubscribe_url,
            values=values,
        )
        # A DKIM-Signature's lines start with its name or a space: still dot-safe.
        return data if self.sign is None else self.sign(data)

    def _retry_or_fail(self, row: Row, error: Exception, took: float | None) -> None:
        if row.attempts >= self.policy.max_attempts:
            self.ledger.failed(row, f"gave up after {row.attempts} attempts: {error}")
            self.report.failed += 1
            self.observe("failed", took)
        else:
            self.ledger.retry(row, error, at=self.clock() + self.policy.backoff(row.attempts))
            self.report.retried += 1
            self.observe("retry", took)


def skip_reason(status: SubscriberStatus) -> str:
    """What a skipped row's last_error says (monitoring splits "suppressed" out by it)."""
    return f"subscriber is {status.value}"


def _since(started: float | None) -> float | None:
    return None if started is None else time.perf_counter() - started
