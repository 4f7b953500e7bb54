"""The ``papermail`` command. Each command parses, calls domain code, prints a table."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from papermail import demo as demo_mod
from papermail import pipeline, subscriptions
from papermail.config import InsecureConfiguration, Settings, get_settings
from papermail.db import session_scope
from papermail.logging_setup import configure_logging
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    MailFormat,
    Subscriber,
    SubscriberStatus,
)
from papermail.runtime import Runtime, utcnow

console = Console()
err = Console(stderr=True)


class Fail(click.ClickException):
    def show(self, file=None) -> None:  # type: ignore[no-untyped-def]
        err.print(f"[bold red]error:[/] {self.message}")


def _rank(level: str) -> int:
    return logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)


def _runtime(settings: Settings | None = None) -> Runtime:
    try:
        return Runtime(settings or get_settings())
    except InsecureConfiguration as exc:
        raise Fail(str(exc)) from exc
    except ValidationError as exc:
        raise Fail(f"bad configuration: {exc}") from exc


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date like 2026-11-26") from exc


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def main(verbose: bool) -> None:
    """papermail: the day's trending research papers, delivered by email."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise Fail(f"bad configuration: {exc}") from exc
    configure_logging(
        json=settings.log_json,
        level="INFO" if verbose else max(settings.log_level, "WARNING", key=_rank),
    )


# --- database ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema."""
    from papermail.dbadmin import current_revision, upgrade

    rt = _runtime()
    upgrade(rt.engine, revision)
    console.print(
        f"database at revision [bold]{current_revision(rt.engine)}[/] "
        f"({rt.engine.url.render_as_string(hide_password=True)})"
    )


# --- pipeline stages ------------------------------------------------------------------------


@main.command()
@click.option("--date", "day", help="Day to fetch (YYYY-MM-DD); default today and yesterday (UTC).")
@click.option("--sample", is_flag=True, help="Load the bundled sample instead of the API.")
def ingest(day: str | None, sample: bool) -> None:
    """Fetch papers from the Hugging Face Daily Papers API and store them."""
    from papermail.sources.base import SourceError
    from papermail.sources.hf import load_sample

    rt = _runtime()
    chosen = _date(day)
    days = (
        [chosen]
        if chosen
        else [utcnow().date() - dt.timedelta(days=n) for n in range(rt.settings.ingest_days_back)]
    )
    try:
        with console.status("fetching papers..."):
            if sample:
                report = pipeline.ingest_fetched(
                    rt.sessions, result=load_sample(), clock=utcnow, source="bundled sample"
                )
            else:
                report = rt.ingest_days(days)
    except SourceError as exc:
        raise Fail(f"ingest failed, nothing was written: {exc}") from exc
    table = Table("fetched", "new", "updated", "rejected", title="Ingest")
    table.add_row(
        str(report.fetched), str(report.inserted), str(report.updated), str(len(report.rejected))
    )
    console.print(table)
    for item in report.rejected[:10]:
        console.print(
            f"  [yellow]skipped[/] item #{item.index} {item.paper_id or ''}: {item.reason}"
        )


@main.command()
@click.option("--date", "day", help="Edition day (YYYY-MM-DD); default today (UTC).")
@click.option("--kind", type=click.Choice(["daily", "weekly"]), default="daily", show_default=True)
@click.option("--top", default=15, show_default=True, help="How many papers to show.")
def rank(day: str | None, kind: str, top: int) -> None:
    """Build (or show) the edition of a day: the ranked papers digests draw from."""
    rt = _runtime()
    chosen = _date(day) or utcnow().date()
    summary = pipeline.build_edition(
        rt.sessions,
        day=chosen,
        kind=EditionKind(kind),
        size=rt.settings.edition_size,
        rank_hour=rt.settings.edition_hour_utc,
        clock=utcnow,
    )
    if summary.edition_id is None:
        raise Fail(f"no papers submitted in the window before {chosen}; run `papermail ingest`")
    word = "built" if summary.created else "already built"
    console.print(f"{kind} edition of {chosen} {word}: {summary.papers} papers")
    with rt.sessions() as session:
        edition = session.get(Edition, summary.edition_id)
        assert edition is not None
        console.print(edition_table(edition, top=top))


def edition_table(edition: Edition, *, top: int) -> Table:
    table = Table(
        "#",
        "score",
        "▲",
        "💬",
        "title",
        "organisation",
        title=f"{edition.day} ({edition.kind.value})",
    )
    for item in edition.items[:top]:
        paper = item.paper
        table.add_row(
            str(item.rank),
            f"{item.score:.3f}",
            str(paper.upvotes),
            str(paper.num_comments),
            _cut(paper.title, 60),
            _cut(paper.organization or "", 24),
        )
    return table


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@click.option("--edition", "edition_id", type=int, help="Edition id; default the latest ones.")
@click.option("--due-only", is_flag=True, help="Only subscribers whose local send hour has come.")
def send(edition_id: int | None, due_only: bool) -> None:
    """Plan deliveries and send them (inline when embedded, through workers in production)."""
    rt = _runtime()
    publish, done = _publisher(rt)
    reports = pipeline.plan(
        rt.sessions,
        now=utcnow(),
        batch_size=rt.settings.batch_size,
        publish=publish,
        due_only=due_only,
        edition_ids=[edition_id] if edition_id else None,
        clock=utcnow,
    )
    if not reports:
        raise Fail("no recent edition to send; run `papermail rank` first")
    done()
    for report in reports:
        console.print(
            f"edition {report.edition_id}: planned {report.planned} deliveries "
            f"({len(report.variants)} variants, {report.batches} batches, "
            f"{report.not_due} not due yet)"
        )
        console.print(funnel_table(rt, report.edition_id))


def _publisher(rt: Runtime) -> tuple[Callable[[list[int]], None], Callable[[], None]]:
    """Where batches go: sent right here when embedded, queued for workers otherwise."""
    if not rt.settings.embedded:
        from workers.tasks import send_batch as send_task

        return (lambda ids: send_task.delay(ids)), (
            lambda: console.print("batches queued for workers")
        )
    progress = Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("send", total=None)

    def publish(ids: list[int]) -> None:
        progress.start()
        rt.send_batch(ids)
        progress.advance(task, len(ids))

    return publish, progress.stop


def funnel_table(rt: Runtime, edition_id: int) -> Table:
    with rt.sessions() as session:
        counts = dict(
            session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.edition_id == edition_id)
                .group_by(Delivery.status)
            ).all()
        )
    table = Table(*(s.value for s in DeliveryStatus), title=f"deliveries of edition {edition_id}")
    table.add_row(*(str(counts.get(s, 0)) for s in DeliveryStatus))
    return table


@main.command()
@click.option("--subscriber", "email", help="Render what this subscriber would get.")
@click.option("--edition", "edition_id", type=int, help="Edition id; default the latest daily.")
@click.option("--out", type=click.Path(path_type=Path), help="File to write; default under var/.")
def preview(email: str | None, edition_id: int | None, out: Path | None) -> None:
    """Render one digest to a file and print its path."""
    from papermail.preview import render_preview

    rt = _runtime()
    with rt.sessions() as session:
        try:
            result = render_preview(
                session,
                email=email,
                edition_id=edition_id,
                env=rt.env,
                links=rt.links,
                list_name=rt.settings.list_name,
                default_max_papers=rt.settings.default_max_papers,
            )
        except LookupError as exc:
            raise Fail(str(exc)) from exc
    suffix = ".html" if result.html is not None else ".txt"
    path = out or rt.settings.var_dir / "previews" / f"{result.name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.html if result.html is not None else result.text, encoding="utf-8")
    console.print(f"[bold]{result.subject}[/]")
    console.print(str(path.resolve()))


# --- subscribers --------------------------------------------------------------------------


@main.group()
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
            help="Papers per digest, 1-30 (default: PAPERMAIL_DEFAULT_MAX_PAPERS).",
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
    ]
    for option in reversed(options):
        command = option(command)
    return command


@subscribers.command("add")
@click.argument("email")
@_prefs_options
@click.option("--pending", is_flag=True, help="Leave unconfirmed (they must confirm by email).")
def subscribers_add(email: str, pending: bool, fmt: str, **prefs: object) -> None:
    """Add a subscriber (confirmed: use only for people who already opted in)."""
    rt = _runtime()
    try:
        preferences = subscriptions.Preferences(
            frequency=prefs["frequency"],
            max_papers=prefs["max_papers"] or rt.settings.default_max_papers,
            topics=prefs["topics"],
            follow_organizations=prefs["organizations"],
            follow_authors=prefs["authors"],
            format=MailFormat(fmt),
            timezone=prefs["timezone"],
            send_hour=prefs["send_hour"],
        )
        with session_scope(rt.sessions) as session:
            subscriber, created = subscriptions.add_subscriber(
                session, email=email, prefs=preferences, now=utcnow(), confirmed=not pending
            )
            status = subscriber.status.value
    except subscriptions.InvalidEmail as exc:
        raise Fail(f"invalid email address {email!r}: {exc}") from exc
    except ValidationError as exc:
        raise Fail(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from exc
    console.print(f"{'added' if created else 'updated'} {subscriber.email} ({status})")


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]))
@click.option("--limit", default=100, show_default=True)
def subscribers_list(status: str | None, limit: int) -> None:
    """List subscribers with their preferences."""
    rt = _runtime()
    with rt.sessions() as session:
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
        title=f"subscribers ({len(rows)} of {total})",
    )
    for s in rows:
        table.add_row(
            str(s.id),
            s.email,
            s.status.value,
            s.frequency.value,
            str(s.max_papers),
            s.format.value,
            _cut(", ".join(s.topics or []), 30),
            s.timezone,
            str(s.send_hour),
        )
    console.print(table)


@subscribers.command("remove")
@click.argument("email")
@click.option(
    "--erase", is_flag=True, help="Delete them and their delivery history (GDPR erasure)."
)
def subscribers_remove(email: str, erase: bool) -> None:
    """Unsubscribe someone (or erase them entirely with --erase)."""
    rt = _runtime()
    try:
        with session_scope(rt.sessions) as session:
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
    console.print(f"{'erased' if erase else 'unsubscribed'} {email}")


# --- demo ------------------------------------------------------------------------------------


@main.command()
@click.option("--offline", is_flag=True, help="Do not try the network; use the bundled sample.")
def demo(offline: bool) -> None:
    """Run the whole pipeline once, embedded, and show where the emails are."""
    import httpx

    settings = demo_mod.demo_settings(get_settings())
    demo_mod.reset(settings)
    rt = _runtime(settings)
    demo_mod.create_schema(rt.engine)
    console.rule("[bold]papermail demo")
    console.print(f"database  {settings.effective_database_url} (embedded; Redis: in-process)")
    transport = httpx.MockTransport(_offline) if offline else None
    with console.status("fetching today's papers from Hugging Face..."):
        papers = demo_mod.fetch_or_sample(
            base_url=settings.hf_api_base, today=utcnow().date(), transport=transport
        )
    console.print(papers.note)
    now = utcnow()
    report, edition_id = demo_mod.prepare(
        rt.sessions, papers=papers, now=now, edition_size=settings.edition_size, clock=utcnow
    )
    console.print(
        f"ingested  {report.fetched} papers ({report.inserted} new, "
        f"{len(report.rejected)} rejected)"
    )
    if edition_id is None:
        raise Fail("no papers to build an edition from")
    with rt.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        console.print(edition_table(edition, top=10))
    publish, done = _publisher(rt)
    pipeline.plan(
        rt.sessions,
        now=now,
        batch_size=settings.batch_size,
        publish=publish,
        due_only=False,
        edition_ids=[edition_id],
        clock=utcnow,
    )
    done()
    _print_deliveries(rt, edition_id)
    index = demo_mod.outbox_index(settings)
    console.rule("[bold]where to look")
    console.print(f"open  [bold]{index.as_uri()}[/]  (every email, as a web page)")
    console.print(f"      {index.parent}/*.eml  (the exact messages, RFC 5322)")
    exe = ".venv/bin/papermail" if Path(".venv/bin/papermail").exists() else "papermail"
    env = f"PAPERMAIL_VAR_DIR={settings.var_dir}"
    console.print("then", highlight=False)
    console.print(
        f"      {env} {exe} web     (the subscriber pages and /ops at http://127.0.0.1:8000)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"      {env} {exe} preview --subscriber ada@example.org", highlight=False, soft_wrap=True
    )


def _offline(request):  # type: ignore[no-untyped-def]
    import httpx

    raise httpx.ConnectError("--offline given", request=request)


def _print_deliveries(rt: Runtime, edition_id: int) -> None:
    with rt.sessions() as session:
        rows = session.execute(
            select(
                Subscriber.email,
                Subscriber.format,
                Subscriber.topics,
                Delivery.status,
                Delivery.variant_key,
            )
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.edition_id == edition_id)
            .order_by(Subscriber.id)
        ).all()
    table = Table("to", "format", "topics", "status", "variant", title="emails written")
    for email, fmt, topics, status, key in rows:
        table.add_row(email, fmt.value, ", ".join(topics or []) or "-", status.value, key[:10])
    console.print(table)


# --- web -------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def web(host: str, port: int) -> None:
    """Serve the subscriber pages: landing, subscribe, preferences, unsubscribe, archive."""
    import uvicorn

    from papermail.web.app import create_app

    rt = _runtime()
    if rt.settings.embedded:
        from papermail.dbadmin import upgrade

        upgrade(rt.engine)  # embedded: the SQLite file may be brand new
    # Our access log (tokens redacted) instead of uvicorn's, which prints full URLs.
    logging.getLogger("papermail.web.access").setLevel(logging.INFO)
    console.print(f"papermail web on http://{host}:{port} (links say {rt.settings.base_url})")
    uvicorn.run(
        create_app(rt),
        host=host,
        port=port,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=rt.settings.forwarded_allow_ips,
        server_header=False,
    )


# Commands that live in their own modules register themselves on `main`.
import papermail.cli_bench  # noqa: E402,F401
import papermail.cli_ops  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
