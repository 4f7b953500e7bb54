"""The stage API for bounces and complaints (papermail/bounces/): what the receiver
(`papermail bounces serve`), the mailbox poll and the webhooks call, each in a transaction
of its own. Like stages.py, it takes the process's Wiring and knows nothing of its callers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from papermail.bounces import mailbox
from papermail.bounces.mailbox import Mailbox, MailboxConfig, PollReport
from papermail.bounces.processor import Intake, Outcome, process_message, process_reports
from papermail.bounces.reports import Report
from papermail.clock import Clock, utcnow
from papermail.db import session_scope
from papermail.models import BounceSource
from papermail.wiring import Wiring


def bounce_intake(w: Wiring) -> Intake:
    s = w.settings
    return Intake(
        verp=w.verp, policy=w.bounce_policy, mail_domain=s.mail_domain, max_bytes=s.bounce_max_bytes
    )


def take_bounce(
    w: Wiring,
    raw: bytes,
    *,
    source: BounceSource,
    envelope_recipient: str | None = None,
    clock: Clock = utcnow,
) -> Outcome:
    """One raw bounce or complaint (the receiver's, a mailbox's), in its own transaction."""
    with session_scope(w.sessions) as session:
        return process_message(
            session,
            raw,
            intake=bounce_intake(w),
            source=source,
            now=clock(),
            envelope_recipient=envelope_recipient,
        )


def take_bounce_reports(
    w: Wiring, reports: Sequence[Report], *, source: BounceSource, clock: Clock = utcnow
) -> Outcome:
    """What an authenticated webhook (SES, Postmark) reported, in one transaction."""
    with session_scope(w.sessions) as session:
        return process_reports(
            session, reports, intake=bounce_intake(w), source=source, now=clock(), trusted=True
        )


def poll_bounces(
    w: Wiring,
    *,
    open_mailbox: Callable[[MailboxConfig], Mailbox] = mailbox.open_mailbox,
    clock: Clock = utcnow,
) -> PollReport | None:
    """Read the bounce mailbox once (None when none is configured)."""
    s = w.settings
    if not s.bounce_mailbox_configured:
        return None
    config = MailboxConfig(
        protocol=s.bounce_mailbox_protocol,
        host=s.bounce_mailbox_host or "",
        user=s.bounce_mailbox_user or "",
        password=s.bounce_mailbox_password.get_secret_value() if s.bounce_mailbox_password else "",
        port=s.bounce_mailbox_port,
        folder=s.bounce_mailbox_folder,
        delete=s.bounce_mailbox_delete,
        timeout=s.http_timeout,
    )
    source = BounceSource.POP3 if config.protocol == "pop3" else BounceSource.IMAP
    return mailbox.poll(
        open_mailbox(config),
        process=lambda raw: take_bounce(w, raw, source=source, clock=clock),
        max_bytes=s.bounce_max_bytes,
    )
