"""A test send: one subscriber's next digest, exactly as they would get it, to another
address (the desk, /ops and the CLI), with no ledger row and an audit entry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import jinja2
from sqlalchemy.orm import Session

from papermail.delivery.base import MailBackend
from papermail.models import Subscriber
from papermail.pipeline.preview import render_preview
from papermail.pipeline.variants import Identity
from papermail.subscribers.audit import Action, record
from papermail.subscribers.subscriptions import normalize_email
from papermail.subscribers.tokens import Links

TEST_SUBJECT_PREFIX = "[test] "


@dataclass(frozen=True, slots=True)
class SentTest:
    to: str
    subject: str
    message_id: str


def send_test(
    session: Session,
    subscriber: Subscriber,
    *,
    to: str,
    actor: str,
    now: dt.datetime,
    env: jinja2.Environment,
    links: Links,
    identity: Identity,
    backend: MailBackend,
    list_name: str,
    default_max_papers: int,
    edition_id: int | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> SentTest:
    """Send ``subscriber``'s next digest, as they would get it, to ``to``.

    Built by the preview path (pipeline/preview.py), subject prefixed "[test] ", sent on
    a connection of its own: no ledger row, and a bounce counts against nobody. The
    reader's own links (preferences, unsubscribe, feedback) are signed for nobody, since
    the copy leaves their mailbox. ``sign``: DKIM, as every digest is signed. Raises
    InvalidEmail (``to``), LookupError (no edition), DeliveryError (the backend refused
    it); records an audit entry when it went.
    """
    address = normalize_email(to)
    preview = render_preview(
        session,
        email=subscriber.email,
        edition_id=edition_id,
        env=env,
        links=links,
        list_name=list_name,
        default_max_papers=default_max_papers,
        personal_links=False,
    )
    subject = TEST_SUBJECT_PREFIX + preview.subject
    message = identity.single_message(
        to=address,
        subject=subject,
        text=preview.text,
        html=preview.html,
        now=now,
        envelope=identity.envelope_from,
        sign=sign,
    )
    with closing(backend.open()) as connection:
        connection.send(message)
    record(
        session,
        actor=actor,
        action=Action.TEST_SEND,
        now=now,
        subscriber_id=subscriber.id,
        detail={"to": address, "subject": subject[:200]},
    )
    session.flush()
    return SentTest(to=address, subject=subject, message_id=message.message_id)
