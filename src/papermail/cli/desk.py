"""The subscriber desk in the terminal: ``papermail subscribers search | show | suppress |
unsuppress | export | import | test-send`` (registered on the ``subscribers`` group).

Thin shells over papermail.subscribers.desk, imports and exports, exactly as
/ops/subscribers is. Actions are recorded as ``cli:$USER``. Addresses, reasons, topics
and errors are whatever someone typed: printed through ``plain``/``escape``, never read
as rich markup; CSV goes to the file or stdout as it is, never through rich.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from papermail.cli.common import Fail, console, cut, dispatcher, plain, wiring
from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.delivery.base import DeliveryError
from papermail.models import Subscriber, SubscriberStatus
from papermail.subscribers import audit, desk, exports, imports, trial_send
from papermail.subscribers.subscriptions import InvalidEmail
from papermail.wiring import Wiring

STATUSES = click.Choice([s.value for s in SubscriberStatus])


def actor() -> str:
    """Who the audit log says did it: ``cli:`` and the login name."""
    try:
        name = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        name = "unknown"
    return f"cli:{name}"


def when(at: dt.datetime | None) -> str:
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M")


def _subscriber(session: Session, ref: str) -> Subscriber:
    try:
        subscriber = desk.lookup(session, ref)
    except InvalidEmail as exc:
        raise Fail(f"{ref!r} is neither an email address nor a subscriber id: {exc}") from exc
    if subscriber is None:
        raise Fail(f"no subscriber {ref}")
    return subscriber


@click.command("search")
@click.argument("query", default="")
@click.option("--status", type=STATUSES, help="Only subscribers with this status.")
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(1, 1000), default=desk.PAGE_SIZE, show_default=True)
def search(query: str, status: str | None, page: int, per_page: int) -> None:
    """Find subscribers whose address contains QUERY (any case)."""
    w = wiring()
    with w.sessions() as session:
        found = desk.search(
            session,
            query=query,
            status=SubscriberStatus(status) if status else None,
            page=page,
            size=per_page,
        )
    table = Table(
        "id",
        "email",
        "status",
        "created",
        "confirmed",
        "bounces",
        title=f"{found.total} found · page {found.number} of {found.pages}",
    )
    for row in found.rows:
        table.add_row(
            str(row.id),
            plain(row.email),
            row.status.value,
            when(row.created_at),
            when(row.confirmed_at),
            str(row.bounce_count),
        )
    console.print(table)
    if found.has_next:
        console.print(f"next: --page {found.number + 1}")


@click.command("show")
@click.argument("subscriber")
def show(subscriber: str) -> None:
    """One subscriber: status history, deliveries, bounces, feedback (SUBSCRIBER: address or id)."""
    w = wiring()
    with w.sessions() as session:
        found = desk.profile(session, _subscriber(session, subscriber))
        s = found.subscriber
        console.print(plain(f"#{s.id} {s.email}: {s.status.value}"))
        if found.unsuppress_to is not None:
            console.print(f"unsuppress would make it {found.unsuppress_to.value}")
        history = Table("when (UTC)", "what", "by", "reason", title="status history")
        for event in found.history:
            history.add_row(
                when(event.at),
                plain(event.what),
                plain(event.actor or ""),
                plain(event.reason or ""),
            )
        console.print(history)
        deliveries = Table(
            "id", "edition", "status", "tries", "sent", "last error", title="deliveries"
        )
        for d in found.deliveries:
            deliveries.add_row(
                str(d.id),
                f"{d.edition_day} {d.edition_kind}",
                d.status.value,
                str(d.attempts),
                when(d.sent_at),
                plain(cut(d.last_error or "", 60)),
            )
        console.print(deliveries)
        console.print(
            f"bounces counted: {found.bounces.count}; "
            f"bounce and complaint events: {len(found.bounces.events)}; "
            f"digests that bounced: {len(found.bounces.deliveries)}"
        )
        for bounce in found.bounces.events:
            console.print(
                plain(
                    f"{when(bounce.received_at)}  {bounce.kind:9}  {bounce.source:8}  "
                    f"{bounce.status or '-':7}  {cut(bounce.diagnostic or '', 60)}"
                )
            )
        for mark in found.feedback:
            console.print(plain(f"{when(mark.created_at)}  {mark.direction.value:4}  {mark.title}"))


@click.command("suppress")
@click.argument("subscriber")
@click.option("--reason", required=True, help="Why; kept in the audit log with your name.")
def suppress(subscriber: str, reason: str) -> None:
    """Stop all mail to an address (SUBSCRIBER: address or id)."""
    w = wiring()
    try:
        with session_scope(w.sessions) as session:
            found = _subscriber(session, subscriber)
            desk.suppress(session, found, actor=actor(), reason=reason, now=utcnow())
            address = found.email
    except audit.DeskRefused as exc:
        raise Fail(str(exc)) from exc
    console.print(f"suppressed {escape(address)}")


@click.command("unsuppress")
@click.argument("subscriber")
@click.option("--reason", required=True, help="Why; kept in the audit log with your name.")
def unsuppress(subscriber: str, reason: str) -> None:
    """Lift a suppression: back to active only if it was active, never for one who left."""
    w = wiring()
    try:
        with session_scope(w.sessions) as session:
            found = _subscriber(session, subscriber)
            status = desk.unsuppress(session, found, actor=actor(), reason=reason, now=utcnow())
            address = found.email
    except audit.DeskRefused as exc:
        raise Fail(str(exc)) from exc
    console.print(f"unsuppressed {escape(address)}: now {status.value}")


@click.command("export")
@click.option("--status", type=STATUSES, help="Only subscribers with this status.")
@click.option("--suppression-list", is_flag=True, help="The suppressed addresses and why.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of standard output.",
)
def export(status: str | None, suppression_list: bool, out: Path | None) -> None:
    """Subscribers as CSV (cells safe to open in a spreadsheet)."""
    if status and suppression_list:
        raise Fail("--suppression-list is the suppressed addresses: leave out --status")
    w = wiring()
    with w.sessions() as session:
        lines = (
            exports.export_suppressions(session)
            if suppression_list
            else exports.export_subscribers(
                session, status=SubscriberStatus(status) if status else None
            )
        )
        if out is None:
            for line in lines:
                click.echo(line, nl=False)
            return
        count = -1  # the header
        with out.open("w", encoding="utf-8", newline="") as file:
            for line in lines:
                file.write(line)
                count += 1
    console.print(f"{count} rows written to {escape(str(out))}")


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Say what it would do; change nothing.")
@click.option(
    "--active",
    is_flag=True,
    help="Import as active, without a confirmation email: only with --consent-source.",
)
@click.option(
    "--consent-source",
    default="",
    help="Where and when these people agreed to get the digest (kept in the audit log).",
)
def import_(file: Path, dry_run: bool, active: bool, consent_source: str) -> None:
    """Import subscribers from a CSV file (email, then any of: frequency, format, max_papers,
    topics, organizations, authors, timezone, send_hour, blend, categories).

    Pending by default: each gets the confirmation email. Never duplicates an address,
    never brings back one that unsubscribed or was suppressed.
    """
    if consent_source and not active:
        raise Fail("--consent-source goes with --active (pending imports confirm by email)")
    with file.open("rb") as handle:  # one byte past the limit is enough to refuse it
        data = handle.read(imports.MAX_IMPORT_BYTES + 1)
    w = wiring()
    try:
        with session_scope(w.sessions) as session:
            plan = imports.plan_import(
                session,
                data,
                active=active,
                consent_source=consent_source,
                default_max_papers=w.settings.default_max_papers,
            )
            _print_plan(plan, dry_run=dry_run)
            if not plan.ready:
                raise Fail(f"nothing imported: {len(plan.errors)} problems (above)")
            if dry_run:
                return
            result = imports.apply_import(session, plan, actor=actor(), now=utcnow())
    except imports.ImportRefused as exc:
        raise Fail(str(exc)) from exc
    _print_result(w, result)


def _print_plan(plan: imports.ImportPlan, *, dry_run: bool) -> None:
    for column in plan.ignored_columns:
        console.print(f"column {column} is ignored (an export's, not a choice)")
    for error in plan.errors:
        where = f"row {error.row}" + (f", {error.column}" if error.column != imports.ROW else "")
        console.print(plain(f"{where}: {error.sentence}"))
    for skip in plan.skipped:
        console.print(plain(f"row {skip.row}, {skip.email}: skipped. {skip.reason}"))
    if plan.ready:
        verb = "would add" if dry_run else "adding"
        console.print(
            f"{plan.rows} rows: {verb} {len(plan.additions)} as {plan.status.value}, "
            f"{len(plan.skipped)} skipped"
        )


def _print_result(w: Wiring, result: imports.ImportResult) -> None:
    late = len(result.skipped)
    console.print(f"imported {len(result.added)} as {result.status.value} ({late} skipped)")
    if result.status is not SubscriberStatus.PENDING or not result.added:
        return
    send = dispatcher(w)
    failed = imports.send_confirmations(result.added, send=send.send_confirmation)
    verb = "queued" if send.queued else "sent"
    console.print(f"confirmation emails {verb}: {len(result.added) - len(failed)}")
    if failed:
        raise Fail(
            f"{len(failed)} confirmation emails were not sent (see the log); they stay "
            "pending: `papermail subscribers add ADDRESS --pending` sends one again"
        )


@click.command("test-send")
@click.argument("subscriber")
@click.option("--to", "to", required=True, help="Where to send the test.")
@click.option("--edition", "edition_id", type=int, help="Edition id (default: their latest).")
def test_send(subscriber: str, to: str, edition_id: int | None) -> None:
    """Send SUBSCRIBER's next digest, as they would get it, to another address ("[test] ")."""
    w = wiring()
    try:
        with session_scope(w.sessions) as session:
            found = _subscriber(session, subscriber)
            sent = trial_send.send_test(
                session,
                found,
                to=to,
                actor=actor(),
                now=utcnow(),
                env=w.env,
                links=w.links,
                identity=w.identity,
                backend=w.backend,
                list_name=w.settings.list_name,
                default_max_papers=w.settings.default_max_papers,
                sign=w.dkim,
                edition_id=edition_id,
            )
    except InvalidEmail as exc:
        raise Fail(f"--to {to!r} is not an email address: {exc}") from exc
    except LookupError as exc:
        raise Fail(str(exc)) from exc
    except DeliveryError as exc:
        raise Fail(f"the test was not sent: {exc}") from exc
    console.print(plain(f"sent {sent.subject!r} to {sent.to}"))


COMMANDS = (search, show, suppress, unsuppress, export, import_, test_send)
