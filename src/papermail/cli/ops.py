"""Operator commands: ``pause``, ``resume``, ``retry-failed``, ``resend``, ``reingest``.

Each is a thin shell over papermail.ops.actions, exactly as the /ops page's buttons are.
"""

from __future__ import annotations

import logging

import click
from rich.markup import escape

from papermail import ingest_stages, stages
from papermail.cli.common import Fail, console, dispatcher, wiring
from papermail.clock import utcnow
from papermail.ops import actions as operations
from papermail.ops.actions import OperationRefused
from papermail.sources.base import SourceError
from papermail.subscribers.subscriptions import InvalidEmail, find
from papermail.wiring import Wiring

log = logging.getLogger(__name__)


def needs_workers(w: Wiring, what: str) -> Wiring:
    """Pause and resume act on workers through Redis; embedded mode has neither."""
    if w.settings.embedded:
        raise Fail(
            f"{what} needs Redis and workers (PAPERMAIL_REDIS_URL, PAPERMAIL_DATABASE_URL): "
            "in embedded mode each command sends inline and nothing runs in the background"
        )
    return w


@click.command()
@click.option("--reason", default="", help="Shown on the dashboard while paused.")
def pause(reason: str) -> None:
    """Pause sending: workers stop within one batch and hand unsent rows back."""
    w = needs_workers(wiring(), "pause")
    if operations.pause(w.redis, now=utcnow(), reason=reason):
        console.print("sending [bold yellow]paused[/]; `papermail resume` to continue")
    else:
        console.print("sending was already paused")


@click.command()
def resume() -> None:
    """Resume sending and queue everything that waited."""
    w = needs_workers(wiring(), "resume")
    with w.sessions() as session:
        queued = operations.resume(
            w.redis,
            session,
            now=utcnow(),
            batch_size=w.settings.batch_size,
            publish=dispatcher(w).send_batch,
        )
    if queued is None:
        console.print("sending was not paused")
    else:
        console.print(f"sending [bold green]resumed[/]; {queued} deliveries queued")


@click.command("retry-failed")
@click.option("--edition", "edition_id", type=int, required=True, help="Edition id.")
def retry_failed(edition_id: int) -> None:
    """Retry an edition's failed deliveries (active subscribers only)."""
    w, now = wiring(), utcnow()
    try:
        with w.sessions() as session:
            count = operations.retry_failed(session, edition_id=edition_id, now=now)
    except OperationRefused as exc:
        raise Fail(str(exc)) from exc
    queued = stages.redispatch(w, dispatcher=dispatcher(w), now=now)
    note = "" if queued or not count else " (sending is paused: they go out on resume)"
    console.print(f"{count} failed deliveries of edition {edition_id} set to retry{note}")


@click.command()
@click.option("--subscriber", "email", required=True, help="The subscriber's email address.")
@click.option("--edition", "edition_id", type=int, help="Edition id; default their latest.")
def resend(email: str, edition_id: int | None) -> None:
    """Send one subscriber's digest again."""
    w = wiring()
    try:
        with w.sessions() as session:
            subscriber = find(session, email)
            if subscriber is None:
                raise Fail(f"no subscriber {email}")
            result = operations.resend(
                session,
                subscriber=subscriber,
                edition_id=edition_id,
                now=utcnow(),
                publish=dispatcher(w).send_batch,
            )
    except (OperationRefused, InvalidEmail) as exc:
        raise Fail(str(exc)) from exc
    console.print(escape(_resend_message(email, result)))


def _resend_message(email: str, result: operations.ResendResult) -> str:
    if result.action == "already_queued":
        return (
            f"delivery {result.delivery_id} of edition {result.edition_id} to {email} "
            f"is already on its way ({result.previous_status})"
        )
    was = f" (was {result.previous_status})" if result.previous_status else ""
    return f"edition {result.edition_id} queued again for {email}{was}"


@click.command()
def reingest() -> None:
    """Fetch papers now (queued for a worker in production, run here when embedded)."""
    w = wiring()
    log.warning("operator re-ran ingest")
    if not w.settings.embedded:
        console.print(f"ingest queued (task {dispatcher(w).ingest()})")
        return
    try:
        with console.status("ingesting..."):
            report = ingest_stages.ingest(
                w, days=ingest_stages.default_ingest_days(w, today=utcnow().date())
            )
    except SourceError as exc:
        raise Fail(f"ingest failed, nothing was written: {exc}") from exc
    console.print(
        f"ingested: {report.fetched} fetched, {report.inserted} new, "
        f"{len(report.rejected)} rejected"
    )
