"""The pipeline, one stage a command: ``ingest``, ``rank``, ``send``, ``preview``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select

from papermail import ingest_stages, stages
from papermail.cli.common import Fail, console, cut, parse_date, plain, sending, wiring
from papermail.clock import utcnow
from papermail.models import Delivery, DeliveryStatus, Edition, EditionKind
from papermail.pipeline.ingest import IngestReport
from papermail.wiring import Wiring


@click.command()
@click.option("--date", "day", help="Day to fetch (YYYY-MM-DD); default the last few days (UTC).")
@click.option(
    "--source",
    type=click.Choice(["hf", "arxiv", "all"]),
    default="hf",
    show_default=True,
    help="Hugging Face Daily Papers, arXiv's new submissions, or both.",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="CODE",
    help="arXiv category (repeatable, e.g. cs.RO); default PAPERMAIL_ARXIV_CATEGORIES.",
)
@click.option(
    "--sample", is_flag=True, help="Load the bundled sample (of each source) instead of the API."
)
def ingest(day: str | None, source: str, categories: tuple[str, ...], sample: bool) -> None:
    """Fetch papers (Hugging Face Daily Papers, arXiv) and store them."""
    from papermail.sources.arxiv import load_arxiv_sample
    from papermail.sources.arxiv_taxonomy import unknown_categories
    from papermail.sources.base import SourceError
    from papermail.sources.hf import load_sample

    if sample and (day or categories):
        raise Fail("--sample is a fixed day of fixed categories; drop --date and --category")
    if categories and source == "hf":
        raise Fail("--category chooses arXiv categories; use it with --source arxiv or all")
    unknown = unknown_categories(categories)
    if unknown:
        raise Fail(
            f"unknown arXiv category: {', '.join(unknown)} (codes look like cs.RO or stat.ML)"
        )
    w = wiring()
    chosen = parse_date(day)
    today = utcnow().date()
    runs: list[tuple[str, Callable[[], IngestReport]]] = []
    if source in ("hf", "all"):
        hf_days = [chosen] if chosen else ingest_stages.default_ingest_days(w, today=today)
        runs.append(
            (
                "Hugging Face",
                (
                    lambda: ingest_stages.store_papers(
                        w, result=load_sample(), source="bundled sample"
                    )
                )
                if sample
                else (lambda: ingest_stages.ingest(w, days=hf_days)),
            )
        )
    if source in ("arxiv", "all"):
        arxiv_days = [chosen] if chosen else ingest_stages.default_arxiv_days(today=today)
        runs.append(
            (
                "arXiv",
                (
                    lambda: ingest_stages.store_papers(
                        w, result=load_arxiv_sample(), source="bundled arXiv sample"
                    )
                )
                if sample
                else (
                    lambda: ingest_stages.ingest_arxiv(
                        w, days=arxiv_days, categories=categories or None
                    )
                ),
            )
        )
    stored: list[str] = []
    for name, run in runs:
        try:
            with console.status(f"fetching papers from {name}..."):
                report = run()
        except SourceError as exc:
            written = f" ({', '.join(stored)} stored)" if stored else ""
            raise Fail(
                f"{name} ingest failed, nothing from it was written{written}: {exc}"
                if stored
                else f"ingest failed, nothing was written: {exc}"
            ) from exc
        stored.append(name)
        print_ingest_report(report, title=f"Ingest ({name})" if source != "hf" else "Ingest")


def print_ingest_report(report: IngestReport, *, title: str) -> None:
    table = Table("fetched", "new", "updated", "rejected", title=title)
    table.add_row(
        str(report.fetched), str(report.inserted), str(report.updated), str(len(report.rejected))
    )
    console.print(table)
    for item in report.rejected[:10]:
        console.print(
            f"  [yellow]skipped[/] item #{item.index} {escape(item.paper_id or '')}: "
            f"{escape(item.reason)}"
        )


@click.command()
@click.option("--date", "day", help="Edition day (YYYY-MM-DD); default today (UTC).")
@click.option("--kind", type=click.Choice(["daily", "weekly"]), default="daily", show_default=True)
@click.option(
    "--top", default=15, show_default=True, type=click.IntRange(1, 200), help="Papers to show."
)
def rank(day: str | None, kind: str, top: int) -> None:
    """Build (or show) the edition of a day: the ranked papers digests draw from."""
    w = wiring()
    chosen = parse_date(day) or utcnow().date()
    summary = stages.build_edition(w, day=chosen, kind=EditionKind(kind))
    if summary.edition_id is None:
        raise Fail(f"no papers submitted in the window before {chosen}; run `papermail ingest`")
    word = "built" if summary.created else "already built"
    console.print(
        f"{kind} edition [bold]{summary.edition_id}[/] of {chosen} {word}: {summary.papers} "
        f"papers (send it: papermail send --edition {summary.edition_id})"
    )
    with w.sessions() as session:
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
            plain(cut(paper.title, 60)),
            plain(cut(paper.organization or "", 24)),
        )
    return table


@click.command()
@click.option("--edition", "edition_id", type=int, help="Edition id; default the latest ones.")
@click.option("--due-only", is_flag=True, help="Only subscribers whose local send hour has come.")
def send(edition_id: int | None, due_only: bool) -> None:
    """Plan deliveries and send them (inline when embedded, through workers in production)."""
    w = wiring()
    if edition_id is not None:
        with w.sessions() as session:
            if session.get(Edition, edition_id) is None:
                raise Fail(f"no edition {edition_id}; `papermail rank` prints edition ids")
    with sending(w) as dispatcher:
        reports = stages.plan(
            w,
            dispatcher=dispatcher,
            now=utcnow(),
            due_only=due_only,
            edition_ids=[edition_id] if edition_id else None,
        )
    if not reports:
        raise Fail("no recent edition to send; run `papermail rank` first")
    for report in reports:
        console.print(
            f"edition {report.edition_id}: planned {report.planned} deliveries "
            f"({report.variants} distinct selections, {report.batches} batches, "
            f"{report.not_due} not due yet)"
        )
        console.print(funnel_table(w, report.edition_id))
    if w.settings.embedded:
        for report in reports:
            fail_if_nothing_went_out(w, report.edition_id)


def delivery_counts(w: Wiring, edition_id: int) -> dict[DeliveryStatus, int]:
    with w.sessions() as session:
        return dict(
            session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.edition_id == edition_id)
                .group_by(Delivery.status)
            ).all()
        )


def funnel_table(w: Wiring, edition_id: int) -> Table:
    counts = delivery_counts(w, edition_id)
    table = Table(*(s.value for s in DeliveryStatus), title=f"deliveries of edition {edition_id}")
    table.add_row(*(str(counts.get(s, 0)) for s in DeliveryStatus))
    return table


def fail_if_nothing_went_out(w: Wiring, edition_id: int) -> None:
    """After sending inline: rows that all failed or wait for a retry mean a broken
    setup (templates missing, relay down), not a quiet success."""
    counts = delivery_counts(w, edition_id)
    stuck = counts.get(DeliveryStatus.FAILED, 0) + counts.get(DeliveryStatus.RETRY, 0)
    if stuck and not counts.get(DeliveryStatus.SENT, 0):
        with w.sessions() as session:
            error = session.scalar(
                select(Delivery.last_error)
                .where(Delivery.edition_id == edition_id, Delivery.last_error.is_not(None))
                .limit(1)
            )
        raise Fail(
            f"no email of edition {edition_id} went out: {stuck} failed or waiting to retry "
            f"(first error: {error or 'unknown'})"
        )


@click.command()
@click.option("--subscriber", "email", help="Render what this subscriber would get.")
@click.option("--edition", "edition_id", type=int, help="Edition id; default the latest daily.")
@click.option("--out", type=click.Path(path_type=Path), help="File to write; default under var/.")
def preview(email: str | None, edition_id: int | None, out: Path | None) -> None:
    """Render one digest to a file and print its path."""
    from papermail.pipeline.preview import render_preview
    from papermail.subscribers.subscriptions import InvalidEmail

    w = wiring()
    with w.sessions() as session:
        try:
            result = render_preview(
                session,
                email=email,
                edition_id=edition_id,
                env=w.env,
                links=w.links,
                list_name=w.settings.list_name,
                default_max_papers=w.settings.default_max_papers,
            )
        except (LookupError, InvalidEmail) as exc:
            raise Fail(str(exc)) from exc
    suffix = ".html" if result.html is not None else ".txt"
    path = out or w.settings.var_dir / "previews" / f"{result.name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.html if result.html is not None else result.text, encoding="utf-8")
    console.print(f"[bold]{escape(result.subject)}[/]")
    console.print(str(path.resolve()))
