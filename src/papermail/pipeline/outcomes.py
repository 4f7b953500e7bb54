"""How sending one message ends, for all mail alike, and sending a single message.

Every message ends one way of four, decided by ``classify``: sent; bounced (a
``PermanentError``: the bounce policy of ``papermail.subscribers.bounces`` counts it);
retried later (a ``TransientError``, or anything unexpected); or not attempted because
the relay is down as a whole (``BackendUnavailable``). ``send_one`` sends a single
message on a connection of its own (confirmations); digests go in batches (sending.py).
"""

from __future__ import annotations

import enum
import logging
from contextlib import closing

from sqlalchemy.orm import Session

from papermail.bounces.events import store_session_bounce
from papermail.clock import Clock, utcnow
from papermail.delivery.base import (
    BackendUnavailable,
    MailBackend,
    OutgoingMessage,
    PermanentError,
)
from papermail.models import Subscriber
from papermail.subscribers.bounces import BouncePolicy

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """How sending one message went."""

    SENT = "sent"
    BOUNCED = "bounced"  # PermanentError: never again; the bounce policy counts it
    RETRY = "retry"  # TransientError, or an unexpected error: try again later
    BACKEND_DOWN = "backend_down"  # BackendUnavailable: nothing can go; this was not tried


def classify(error: Exception) -> Outcome:
    """What a failure to send means, for every kind of mail."""
    if isinstance(error, PermanentError):
        return Outcome.BOUNCED
    if isinstance(error, BackendUnavailable):
        return Outcome.BACKEND_DOWN
    return Outcome.RETRY


def send_one(
    session: Session,
    message: OutgoingMessage,
    *,
    backend: MailBackend,
    subscriber: Subscriber,
    bounces: BouncePolicy,
    clock: Clock = utcnow,
) -> Outcome:
    """Send one message to ``subscriber`` on a connection of its own.

    Returns SENT, or BOUNCED once the bounce policy has counted it (in the session's
    transaction, not committed). Anything else propagates (TransientError and BackendUnavailable
    included) for the caller to retry later.
    """
    sent_as = subscriber.status
    with closing(backend.open()) as connection:
        try:
            connection.send(message)
        except Exception as error:
            if classify(error) is not Outcome.BOUNCED:
                raise
            log.warning("message to subscriber %s bounced: %s", subscriber.id, error)
            refusal = error
        else:
            return Outcome.SENT
    bounces.record(session, subscriber.id, sent_as=sent_as)
    store_session_bounce(
        session,
        subscriber_id=subscriber.id,
        delivery_id=None,
        recipient=message.recipient,
        error=refusal,
        now=clock(),
    )
    return Outcome.BOUNCED
