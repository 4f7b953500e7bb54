"""The one place a bounce or complaint changes anything, whichever way it came.

``process_message`` takes a raw message (from ``papermail bounces serve`` or a polled
mailbox), ``process_reports`` what a webhook said. Either way each report is matched
to what we sent:

1. a VERP address (the envelope recipient of a bounce, or a header naming it): its
   signature is checked, and a forged, altered or truncated one refuses the message;
2. else one of our Message-IDs in the report (``<papermail.e1.d42@...>``), accepted only
   when the report's recipient is that delivery's subscriber (a Message-ID is not a secret);
3. else, for an authenticated webhook only (SES, Postmark), the recipient's address.

Then the event is stored once (``events.store``: a replay finds its dedup key taken and
changes nothing more) and the bounce policy (``papermail.subscribers.bounces``) applies:
a hard bounce counts or suppresses, a soft one scores, a complaint unsubscribes and
suppresses. Everything happens in the caller's session; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from papermail.bounces import dsn, events
from papermail.bounces.reports import Refused, Report, delivery_in_message_id, worst
from papermail.bounces.verp import Verp, VerpClaims
from papermail.models import (
    BounceKind,
    BounceSource,
    Delivery,
    Subscriber,
    SubscriberStatus,
)
from papermail.subscribers.bounces import BouncePolicy
from papermail.subscribers.subscriptions import find
from papermail.subscribers.tokens import InvalidToken

log = logging.getLogger(__name__)

# The statuses a message may have gone out under (suppression replaces only those).
DIGEST = (SubscriberStatus.ACTIVE,)
CONFIRMATION = (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED)
EITHER = (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)


@dataclass(frozen=True, slots=True)
class Intake:
    """What processing needs besides the session: fixed per process."""

    verp: Verp
    policy: BouncePolicy
    mail_domain: str  # our Message-IDs' domain
    max_bytes: int = 1024 * 1024


@dataclass
class Outcome:
    """What one message or webhook did: events stored, replays, refusals with reasons."""

    stored: int = 0
    duplicates: int = 0
    suppressed: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return bool(self.stored or self.duplicates)

    def summary(self) -> str:
        parts = [f"{self.stored} stored", f"{self.duplicates} already seen"]
        if self.suppressed:
            parts.append(f"suppressed {len(self.suppressed)}")
        if self.refused:
            parts.append("refused: " + "; ".join(self.refused))
        return ", ".join(parts)

    def add(self, other: Outcome) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.suppressed += other.suppressed
        self.refused += other.refused


@dataclass(frozen=True, slots=True)
class _Target:
    subscriber: Subscriber
    delivery_id: int | None
    sent_as: tuple[SubscriberStatus, ...]


def process_message(
    session: Session,
    raw: bytes,
    *,
    intake: Intake,
    source: BounceSource,
    now: dt.datetime,
    envelope_recipient: str | None = None,
) -> Outcome:
    """A raw bounce or complaint. ``envelope_recipient``: the RCPT TO it came in on (the
    receiver's); without it (a polled mailbox) the VERP address is read from its headers.
    Refusals are in the outcome, with their reasons; nothing is changed for them."""
    try:
        parsed = dsn.parse(raw, max_bytes=intake.max_bytes)
        claims = _verp_claims(intake.verp, envelope_recipient, parsed.verp_addresses)
    except Refused as refused:
        log.info("bounce refused: %s", refused.reason)
        return Outcome(refused=[refused.reason])
    reports = [worst(list(parsed.reports))] if claims is not None else list(parsed.reports)
    return process_reports(
        session, reports, intake=intake, source=source, now=now, claims=claims, trusted=False
    )


def process_reports(
    session: Session,
    reports: Sequence[Report],
    *,
    intake: Intake,
    source: BounceSource,
    now: dt.datetime,
    claims: VerpClaims | None = None,
    trusted: bool = False,
) -> Outcome:
    """Reports from one bounce or webhook. ``claims``: a verified VERP token naming what
    they are about. ``trusted``: the source is authenticated (a verified SNS signature,
    Postmark's credentials), so a recipient's address alone may name the subscriber."""
    outcome = Outcome()
    for report in reports:
        try:
            target = _target(session, report, claims=claims, intake=intake, trusted=trusted)
            outcome.add(_apply(session, report, target, source=source, now=now, intake=intake))
        except Refused as refused:
            log.info("%s report refused: %s", source.value, refused.reason)
            outcome.refused.append(refused.reason)
    return outcome


def _verp_claims(
    verp: Verp, envelope_recipient: str | None, header_addresses: Sequence[str]
) -> VerpClaims | None:
    """The verified claims of the VERP address the bounce came to, None if it names none.
    A VERP-shaped address of ours that does not verify refuses the whole message."""
    candidates = [envelope_recipient] if envelope_recipient else list(header_addresses)
    for address in candidates:
        token = verp.token_in(address)
        if token is None:
            continue
        try:
            return verp.read(token)
        except InvalidToken as exc:
            raise Refused(f"forged or damaged VERP address ({exc.reason})") from exc
    if envelope_recipient:
        raise Refused(f"not a bounce address of {verp.domain}")
    return None


def _target(
    session: Session,
    report: Report,
    *,
    claims: VerpClaims | None,
    intake: Intake,
    trusted: bool,
) -> _Target:
    if claims is not None and claims.delivery_id is not None:
        return _delivery_target(session, claims.delivery_id)
    if claims is not None and claims.subscriber_id is not None:
        subscriber = session.get(Subscriber, claims.subscriber_id)
        if subscriber is None:
            raise Refused(f"no subscriber {claims.subscriber_id} (erased?)")
        return _Target(subscriber, None, CONFIRMATION)
    delivery_id = delivery_in_message_id(report.message_id, domain=intake.mail_domain)
    if delivery_id is not None:
        target = _delivery_target(session, delivery_id)
        if (report.recipient or "").lower() != target.subscriber.email.lower():
            raise Refused(f"the report's recipient is not delivery {delivery_id}'s")
        return target
    if trusted and report.recipient:
        subscriber = find(session, report.recipient)
        if subscriber is None:
            raise Refused("no subscriber with that address")
        return _Target(subscriber, None, EITHER)
    raise Refused("names nothing we sent (no VERP address, no Message-ID of ours)")


def _delivery_target(session: Session, delivery_id: int) -> _Target:
    delivery = session.get(Delivery, delivery_id)
    subscriber = session.get(Subscriber, delivery.subscriber_id) if delivery else None
    if delivery is None or subscriber is None:
        raise Refused(f"no delivery {delivery_id} (erased?)")
    return _Target(subscriber, delivery.id, DIGEST)


def _apply(
    session: Session,
    report: Report,
    target: _Target,
    *,
    source: BounceSource,
    now: dt.datetime,
    intake: Intake,
) -> Outcome:
    subscriber = target.subscriber
    new = events.store(
        session,
        kind=report.kind,
        source=source,
        subscriber_id=subscriber.id,
        delivery_id=target.delivery_id,
        recipient=report.recipient or subscriber.email,
        status=report.status,
        diagnostic=report.diagnostic,
        message=_message_key(report, target, intake=intake),
        now=now,
    )
    if not new:
        log.info(
            "%s %s for subscriber %s already recorded",
            source.value,
            report.kind.value,
            subscriber.id,
        )
        return Outcome(duplicates=1)
    policy, suppressed = intake.policy, False
    if report.kind is BounceKind.COMPLAINT:
        policy.record_complaint(session, subscriber, now=now)
        suppressed = True
    elif report.kind is BounceKind.HARD:
        suppressed = policy.record_late_hard(
            session, subscriber.id, sent_as=target.sent_as, status=report.status
        )
    else:
        _score, suppressed = policy.record_soft(
            session, subscriber.id, sent_as=target.sent_as, now=now
        )
    log.log(
        logging.WARNING if suppressed else logging.INFO,
        "%s %s for subscriber %s (delivery %s, status %s)%s",
        source.value,
        report.kind.value,
        subscriber.id,
        target.delivery_id,
        report.status,
        ": suppressed" if suppressed else "",
    )
    return Outcome(stored=1, suppressed=[subscriber.id] if suppressed else [])


def _message_key(report: Report, target: _Target, *, intake: Intake) -> str:
    """What the bounced message is called in its dedup key: its Message-ID when that names
    the delivery (so a bounce that comes twice, by VERP and by webhook, is one event, and
    a resend's bounce is its own), else the delivery, else what the report calls itself."""
    quoted = delivery_in_message_id(report.message_id, domain=intake.mail_domain)
    if target.delivery_id is not None:
        if quoted == target.delivery_id and report.message_id:
            return report.message_id.strip().strip("<>")
        return f"delivery:{target.delivery_id}"
    return report.message_id or report.reference or f"subscriber:{target.subscriber.id}"
