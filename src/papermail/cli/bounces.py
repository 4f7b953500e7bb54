"""``papermail bounces``: take late bounces and complaints (docs/operations.md)."""

from __future__ import annotations

import signal
import threading

import click
from rich.markup import escape

from papermail import bounce_stages
from papermail.bounces.receiver import make_server
from papermail.cli.common import Fail, console, wiring
from papermail.models import BounceSource


@click.group()
def bounces() -> None:
    """Take bounces and complaints that come back after a message has left."""


@bounces.command()
@click.option("--host", default=None, help="Address to listen on [PAPERMAIL_BOUNCE_LISTEN_HOST].")
@click.option(
    "--port", default=None, type=click.IntRange(1, 65535), help="[PAPERMAIL_BOUNCE_LISTEN_PORT]"
)
@click.option("--lmtp", is_flag=True, help="Speak LMTP (behind an MTA that owns port 25).")
def serve(host: str | None, port: int | None, lmtp: bool) -> None:
    """Receive bounces for the bounce domain by SMTP (or LMTP) until stopped."""
    w = wiring()
    s = w.settings
    server = make_server(
        verp=w.verp,
        process=lambda raw, rcpt: bounce_stages.take_bounce(
            w, raw, source=BounceSource.SMTP, envelope_recipient=rcpt
        ),
        host=host or s.bounce_listen_host,
        port=port or s.bounce_listen_port,
        max_bytes=s.bounce_max_bytes,
        lmtp=lmtp,
    )
    try:
        server.start()
    except Exception as exc:  # aiosmtpd wraps bind errors in its own
        raise Fail(f"cannot listen on {server.hostname}:{server.port}: {exc}") from exc
    protocol = "LMTP" if lmtp else "SMTP"
    console.print(
        f"taking bounces for bounces+…@{escape(w.verp.domain)} by {protocol} on "
        f"{escape(server.hostname)}:{server.port} (Ctrl-C to stop)"
    )
    try:
        wait_until_stopped()
    finally:
        server.stop()


def wait_until_stopped() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM (docker stop)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


@bounces.command()
def poll() -> None:
    """Read the bounce mailbox once (IMAP or POP3, PAPERMAIL_BOUNCE_MAILBOX_*)."""
    w = wiring()
    try:
        report = bounce_stages.poll_bounces(w)
    except OSError as exc:  # imaplib and poplib errors, TLS, DNS, refused connections
        raise Fail(f"bounce mailbox: {type(exc).__name__}: {exc}") from exc
    if report is None:
        raise Fail("no bounce mailbox: set PAPERMAIL_BOUNCE_MAILBOX_HOST and _USER")
    figures = report.as_dict()
    console.print(", ".join(f"{name} {n:,}" for name, n in figures.items()))
