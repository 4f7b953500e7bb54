"""Double opt-in: record a sign-up, mail its confirmation link, confirm it, expire it.

The web form, the CLI and the Celery tasks all go through here. Nothing in this
module tells a caller whether an address was already known: the subscribe page
looks the same either way, and the confirmation email is sent from a task.

Who gets a confirmation email when they (or someone) submit the form:

- a new address: a pending row with the chosen preferences;
- a pending one: its preferences are replaced by the latest submission;
- an unsubscribed one: its preferences are replaced, but it stays unsubscribed
  until the link is opened (never reactivated without confirming, and no
  half-state for ``expire_pending`` to trip over); every confirm and preferences
  link sent before stops working, so only the new email can bring them back;
- an active one: nothing changes (a stranger must not be able to edit someone's
  preferences); the link they get lands on their preferences page;
- a suppressed one: nothing at all. Bounces are the mailbox's word.

A confirm link activates once, and only when the reader presses the button its page
shows (a POST): mail scanners open every link, so opening one (a GET) changes nothing.
Activating rotates the subscriber's token version, which kills that link and every
other link minted before (the preferences links mailed afterwards carry the new
version); unsubscribing rotates it again. A link used after that changes nothing and
says it was used. An active reader's link (the way in above) changes nothing, so
nothing is used up.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass
from typing import Any, cast

import jinja2
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papermail.delivery.base import MailBackend
from papermail.models import Subscriber, SubscriberStatus
from papermail.pipeline.outcomes import Outcome, send_one
from papermail.pipeline.rendering import render_confirmation
from papermail.pipeline.sending import Sign
from papermail.pipeline.variants import Identity
from papermail.subscribers.bounces import BouncePolicy
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import (
    activate,
    apply_preferences,
    normalize_email,
    revoke_links,
)
from papermail.subscribers.tokens import InvalidToken, Links, Purpose, TokenSigner

log = logging.getLogger(__name__)

# Unconfirmed sign-ups older than this are deleted (the confirm link lives 2 days).
PENDING_TTL = dt.timedelta(days=7)
# Links whose token must carry the subscriber's current token_version. Unsubscribe
# links are not in it: they must keep working from emails sent months ago.
VERSIONED = frozenset({Purpose.CONFIRM, Purpose.PREFERENCES})


def request_subscription(
    session: Session, *, email: str, prefs: Preferences, now: dt.datetime
) -> int | None:
    """Record a sign-up request; returns the subscriber id to confirm, or None to stay silent.

    Raises InvalidEmail for an address that is not one. Flushes, does not commit.
    """
    address = normalize_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        subscriber = Subscriber(email=address, status=SubscriberStatus.PENDING, created_at=now)
        apply_preferences(subscriber, prefs)
        try:
            with session.begin_nested():  # two tabs submitting at once: one row, no 500
                session.add(subscriber)
        except IntegrityError:
            return request_subscription(session, email=address, prefs=prefs, now=now)
    elif subscriber.status is SubscriberStatus.SUPPRESSED:
        return None
    elif subscriber.status is SubscriberStatus.PENDING:
        apply_preferences(subscriber, prefs)
        subscriber.created_at = now  # the sign-up restarts: expiry counts from the latest
    elif subscriber.status is SubscriberStatus.UNSUBSCRIBED:
        apply_preferences(subscriber, prefs)
        revoke_links(subscriber)  # only the confirmation about to be sent can bring them back
    session.flush()
    return subscriber.id


def send_confirmation(
    session: Session,
    *,
    subscriber_id: int,
    env: jinja2.Environment,
    links: Links,
    identity: Identity,
    backend: MailBackend,
    now: dt.datetime,
    bounce_threshold: int = 3,
    sign: Sign | None = None,
) -> bool:
    """Mail the confirmation link; True if a message left. TransientError propagates.

    A bounce counts like a digest's (one policy: papermail.subscribers.bounces): at
    ``bounce_threshold`` the address is suppressed and gets no confirmation again.
    ``sign`` (DKIM) signs the message as sending's does a digest.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status is SubscriberStatus.SUPPRESSED:
        log.info("no confirmation for subscriber %s: gone or suppressed", subscriber_id)
        return False
    rendered = render_confirmation(
        env,
        confirm_url=links.confirm(subscriber.id, subscriber.token_version),
        email=subscriber.email,
        topics=list(subscriber.topics or []),
        frequency=subscriber.frequency.value,
    )
    message = identity.single_message(
        to=subscriber.email,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        now=now,
        envelope=identity.envelope_for(subscriber_id=subscriber.id),
        sign=sign,
    )
    outcome = send_one(
        session,
        message,
        backend=backend,
        subscriber=subscriber,
        bounces=BouncePolicy(threshold=bounce_threshold),
        clock=lambda: now,
    )
    return outcome is Outcome.SENT


def subscriber_for_token(
    session: Session, *, signer: TokenSigner, purpose: Purpose, token: str
) -> Subscriber:
    """The subscriber a link names, or InvalidToken (bad, expired, revoked, or gone)."""
    claims = signer.read(purpose, token)
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    if purpose in VERSIONED and claims.token_version != subscriber.token_version:
        raise InvalidToken("revoked")
    return subscriber


class Confirmed(enum.StrEnum):
    """What a confirm link does (``check_confirm``) or did (``confirm``)."""

    READY = "ready"  # the link is good and would activate them: nothing happened yet
    ACTIVATED = "activated"  # this link subscribed them; the links sent before are revoked
    ALREADY_ACTIVE = "already active"  # a way in for an active reader: nothing changed
    USED = "used"  # used already, or revoked by a newer sign-up or an unsubscribe: nothing changed


@dataclass(frozen=True, slots=True)
class Confirmation:
    outcome: Confirmed
    subscriber: Subscriber


def check_confirm(session: Session, *, signer: TokenSigner, token: str) -> Confirmation:
    """What opening a confirm link would do, changing nothing (the GET a scanner sends).

    Raises InvalidToken for a link that is bad, expired, for someone erased or suppressed.
    """
    claims = signer.read(Purpose.CONFIRM, token)
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    if subscriber.status is SubscriberStatus.SUPPRESSED:
        raise InvalidToken("suppressed")
    if claims.token_version != subscriber.token_version:
        return Confirmation(Confirmed.USED, subscriber)
    if subscriber.status is SubscriberStatus.ACTIVE:
        return Confirmation(Confirmed.ALREADY_ACTIVE, subscriber)
    return Confirmation(Confirmed.READY, subscriber)


def confirm(session: Session, *, signer: TokenSigner, token: str, now: dt.datetime) -> Confirmation:
    """Confirm with a link (the reader pressed the button): activate, once. Flushes only.

    Raises what ``check_confirm`` raises. Activating rotates the token version with a
    conditional UPDATE, so of two requests racing with one link exactly one activates.
    An active reader's current link changes nothing and is not used up: it is what the
    sign-up form mails them to reach their preferences, and using it up would revoke the
    links in their digests.
    """
    checked = check_confirm(session, signer=signer, token=token)
    if checked.outcome is not Confirmed.READY:
        return checked
    subscriber = checked.subscriber
    version = subscriber.token_version
    result = session.execute(
        update(Subscriber)
        .where(
            Subscriber.id == subscriber.id,
            Subscriber.token_version == version,
            Subscriber.status != SubscriberStatus.SUPPRESSED,
        )
        .values(token_version=Subscriber.token_version + 1)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        session.expire(subscriber)
        return Confirmation(Confirmed.USED, subscriber)  # another request used it first
    session.expire(subscriber, ["token_version"])
    activate(subscriber, now=now)
    session.flush()
    return Confirmation(Confirmed.ACTIVATED, subscriber)


def expire_pending(
    session: Session, *, now: dt.datetime, older_than: dt.timedelta = PENDING_TTL
) -> int:
    """Delete sign-ups never confirmed within ``older_than``; returns how many."""
    result = session.execute(
        delete(Subscriber)
        .where(
            Subscriber.status == SubscriberStatus.PENDING,
            Subscriber.confirmed_at.is_(None),
            Subscriber.created_at < now - older_than,
        )
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount or 0
