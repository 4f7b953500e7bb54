"""``papermail subscribers``: add, list and remove subscribers; the desk (cli/desk.py)."""

from __future__ import annotations

from collections.abc import Callable

import click
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select

from papermail.cli import desk
from papermail.cli.common import Fail, console, cut, dispatcher, plain, wiring
from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.models import MailFormat, Subscriber, SubscriberStatus
from papermail.subscribers import subscriptions
from papermail.subscribers.preferences import (
    BLENDS,
    MAX_CATEGORIES,
    MAX_PAPERS,
    MIN_PAPERS,
    Preferences,
    blend_of,
    error_lines,
    nearest_blend,
)

# Preferences' field names as `subscribers add` spells them, for its error lines.
OPTIONS = {
    "frequency": "--frequency",
    "max_papers": "--max-papers",
    "topics": "--topics",
    "follow_organizations": "--organizations",
    "follow_authors": "--authors",
    "format": "--format",
    "timezone": "--timezone",
    "send_hour": "--send-hour",
    "relevance_weight": "--blend",
    "arxiv_categories": "--category",
}
DEFAULT_BLEND = nearest_blend(Preferences().relevance_weight).slug


@click.group()
def subscribers() -> None:
    """Add, list and remove subscribers."""


def _prefs_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--frequency",
            type=click.Choice(["daily", "weekly"]),
            default="daily",
            show_default=True,
        ),
        click.option(
            "--max-papers",
            type=int,
            default=None,
            help=f"Papers per digest, {MIN_PAPERS}-{MAX_PAPERS}"
            " (default: PAPERMAIL_DEFAULT_MAX_PAPERS).",
        ),
        click.option(
            "--topics", default="", help="Comma-separated keywords, e.g. 'diffusion, RL'."
        ),
        click.option(
            "--organizations", default="", help="Comma-separated organisations to follow."
        ),
        click.option("--authors", default="", help="Comma-separated authors to follow."),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["html", "text"]),
            default="html",
            show_default=True,
        ),
        click.option("--timezone", default="UTC", show_default=True, help="IANA time zone."),
        click.option(
            "--send-hour", type=int, default=7, show_default=True, help="Local hour, 0-23."
        ),
        click.option(
            "--blend",
            type=click.Choice([blend.slug for blend in BLENDS]),
            default=DEFAULT_BLEND,
            show_default=True,
            help="Trending vs. for me: the trending list everyone gets .. only papers picked"
            " for them.",
        ),
        click.option(
            "--category",
            "categories",
            multiple=True,
            metavar="CODE",
            help=f"arXiv category to follow (repeatable, e.g. cs.RO; at most {MAX_CATEGORIES}).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@subscribers.command("add")
@click.argument("email")
@_prefs_options
@click.option(
    "--pending",
    is_flag=True,
    help="Leave unconfirmed and email them the confirmation link (double opt-in).",
)
def subscribers_add(email: str, pending: bool, fmt: str, **prefs: object) -> None:
    """Add a subscriber (confirmed: use only for people who already opted in).

    Never brings back an address that unsubscribed or bounced: only its owner can,
    through the web form and its confirmation email.
    """
    w = wiring()
    try:
        max_papers = prefs["max_papers"]
        preferences = Preferences.model_validate(
            {
                "frequency": prefs["frequency"],
                "max_papers": w.settings.default_max_papers if max_papers is None else max_papers,
                "topics": prefs["topics"],
                "follow_organizations": prefs["organizations"],
                "follow_authors": prefs["authors"],
                "format": MailFormat(fmt),
                "timezone": prefs["timezone"],
                "send_hour": prefs["send_hour"],
                "relevance_weight": prefs["blend"],
                "arxiv_categories": prefs["categories"],
            }
        )
        with session_scope(w.sessions) as session:
            subscriber, created = subscriptions.add_subscriber(
                session, email=email, prefs=preferences, now=utcnow(), confirmed=not pending
            )
            subscriber_id, address, status = subscriber.id, subscriber.email, subscriber.status
    except subscriptions.InvalidEmail as exc:
        raise Fail(f"invalid email address {email!r}: {exc}") from exc
    except subscriptions.OptedOut as exc:
        raise Fail(opted_out(exc)) from exc
    except ValidationError as exc:
        raise Fail("\n".join(error_lines(exc, labels=OPTIONS))) from exc
    done = f"{'added' if created else 'updated'} {address} ({status.value})"
    if status is not SubscriberStatus.PENDING:
        console.print(escape(done))
        return
    # After the commit: a task must never name a row its worker cannot see yet.
    send = dispatcher(w)
    try:
        send.send_confirmation(subscriber_id)
    except Exception as exc:  # the row is in; say what did not happen and how to retry
        raise Fail(
            f"{done}, but the confirmation email was not sent "
            f"({type(exc).__name__}: {exc}); run the same command again to retry"
        ) from exc
    console.print(escape(f"{done}: confirmation email {'queued' if send.queued else 'sent'}"))


def opted_out(exc: subscriptions.OptedOut) -> str:
    """Why an operator cannot add this address back, in one line."""
    if exc.status is SubscriberStatus.SUPPRESSED:
        return (
            f"not added: {exc.email} is suppressed (mail to it bounced), "
            "so papermail does not mail it any more"
        )
    since = f" on {exc.since:%Y-%m-%d}" if exc.since else ""
    return (
        f"not added: {exc.email} unsubscribed{since}; only they can come back, by "
        "subscribing again on the web form (it emails them a confirmation link)"
    )


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
def subscribers_list(status: str | None, limit: int) -> None:
    """List subscribers with their preferences."""
    w = wiring()
    with w.sessions() as session:
        query = select(Subscriber).order_by(Subscriber.id).limit(limit)
        if status:
            query = query.where(Subscriber.status == SubscriberStatus(status))
        rows = list(session.scalars(query))
        total = session.scalar(select(func.count()).select_from(Subscriber))
    table = Table(
        "id",
        "email",
        "status",
        "freq",
        "n",
        "format",
        "topics",
        "tz",
        "hour",
        "blend",
        "categories",
        title=f"subscribers ({len(rows)} of {total})",
    )
    for s in rows:
        table.add_row(
            str(s.id),
            plain(s.email),
            s.status.value,
            s.frequency.value,
            str(s.max_papers),
            s.format.value,
            plain(cut(", ".join(s.topics or []), 30)),
            plain(s.timezone),
            str(s.send_hour),
            blend_name(s.relevance_weight),
            plain(cut(", ".join(s.arxiv_categories or []), 30)),
        )
    console.print(table)


def blend_name(weight: float) -> str:
    """The --blend value a weight is; a weight set by hand between steps, as the number."""
    blend = blend_of(weight)
    return blend.slug if blend else f"{weight:g}"


@subscribers.command("remove")
@click.argument("email")
@click.option(
    "--erase", is_flag=True, help="Delete them and their delivery history (GDPR erasure)."
)
def subscribers_remove(email: str, erase: bool) -> None:
    """Unsubscribe someone (or erase them entirely with --erase)."""
    w = wiring()
    try:
        with session_scope(w.sessions) as session:
            subscriber = subscriptions.find(session, email)
            if subscriber is None:
                raise Fail(f"no subscriber {email}")
            if erase:
                subscriptions.erase(session, subscriber)
            else:
                subscriptions.unsubscribe(
                    session, subscriber, now=utcnow(), reason="removed by operator"
                )
    except subscriptions.InvalidEmail as exc:
        raise Fail(f"invalid email address {email!r}: {exc}") from exc
    console.print(f"{'erased' if erase else 'unsubscribed'} {escape(email)}")


# The subscriber desk's commands (search, show, suppress, ...) live in cli/desk.py.
for _command in desk.COMMANDS:
    subscribers.add_command(_command)
