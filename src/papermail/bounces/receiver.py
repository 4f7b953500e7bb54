"""An SMTP (or LMTP) server that takes bounces for the bounce domain: `papermail bounces serve`.

It accepts mail only for ``bounces+<token>@<bounce domain>`` whose token verifies; any
other recipient, a forged token included, is refused at RCPT (550), so nothing else can
be dropped into it. A message over ``max_bytes`` is refused at DATA (552, aiosmtpd's own
cap). Each accepted message goes to ``process`` (the processor, in a worker thread: it
talks to the database) once per recipient; it answers 250 whether the processor stored
the bounce or refused it (the reason is logged: a 5xx would only bounce the bounce), and
451 if the processor failed, so the sending server tries again later.

LMTP (``lmtp=True``) is for running behind an MTA that owns port 25 (Postfix's
``transport_maps``): one recipient per transaction, since LMTP answers DATA per recipient.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from papermail.bounces.processor import Outcome
from papermail.bounces.verp import Verp
from papermail.subscribers.tokens import InvalidToken

log = logging.getLogger(__name__)

# (raw message, the RCPT TO it came in on) -> what the processor did
Process = Callable[[bytes, str], Outcome]
MAX_RECIPIENTS = 10  # a bounce goes to one VERP address; a few, at most, is plenty


class BounceHandler:
    """aiosmtpd's handler: RCPT checks the VERP address, DATA hands the message over."""

    def __init__(self, *, verp: Verp, process: Process, max_recipients: int = MAX_RECIPIENTS):
        self.verp = verp
        self.process = process
        self.max_recipients = max_recipients

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        token = self.verp.token_in(address)
        if token is None:
            return f"550 5.1.1 only bounces for {self.verp.domain} are taken here"
        try:
            self.verp.read(token)
        except InvalidToken as exc:
            log.warning("bounce receiver refused RCPT %r: %s", address[:120], exc.reason)
            return "550 5.1.1 no such bounce address"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 too many recipients, send the rest in another transaction"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
        loop = asyncio.get_running_loop()
        try:
            for recipient in envelope.rcpt_tos:
                outcome = await loop.run_in_executor(None, self.process, data, recipient)
                log.info("bounce for %s from %s: %s", recipient, session.peer, outcome.summary())
        except Exception:
            log.exception("bounce processing failed; the sender will retry")
            return "451 4.3.0 cannot take this bounce now, try again later"
        return "250 2.0.0 OK"


class BounceController(Controller):
    """aiosmtpd's threaded controller, speaking LMTP when asked to."""

    def __init__(self, handler: BounceHandler, *, lmtp: bool = False, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.lmtp = lmtp

    def factory(self) -> SMTP:
        return (LMTP if self.lmtp else SMTP)(self.handler, **self.SMTP_kwargs)


def make_server(
    *,
    verp: Verp,
    process: Process,
    host: str,
    port: int,
    max_bytes: int,
    lmtp: bool = False,
    timeout: float = 60.0,
) -> BounceController:
    """The server, not yet started (``.start()``; ``.stop()``)."""
    handler = BounceHandler(
        verp=verp, process=process, max_recipients=1 if lmtp else MAX_RECIPIENTS
    )
    return BounceController(
        handler,
        lmtp=lmtp,
        hostname=host,
        port=port,
        server_hostname=verp.domain,
        data_size_limit=max_bytes,
        timeout=timeout,  # an idle client is dropped after this
        enable_SMTPUTF8=False,
        ident="papermail bounces",
    )
