"""``papermail demo``: the whole pipeline once, embedded, and where to look."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click
import httpx
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from papermail import demo as demo_mod
from papermail import stages
from papermail.cli.common import Fail, console, plain, sending, wiring
from papermail.cli.pipeline import edition_table, fail_if_nothing_went_out
from papermail.clock import utcnow
from papermail.config import get_settings
from papermail.models import Delivery, Edition, Subscriber
from papermail.wiring import Wiring


@click.command()
@click.option("--offline", is_flag=True, help="Do not try the network; use the bundled sample.")
def demo(offline: bool) -> None:
    """Run the whole pipeline once, embedded, and show where the emails are."""
    settings = demo_mod.demo_settings(get_settings())
    demo_mod.reset(settings)
    w = wiring(settings)  # a brand-new embedded database: the schema is created here
    console.rule("[bold]papermail demo")
    console.print(f"database  {settings.effective_database_url} (embedded; Redis: in-process)")
    transport = httpx.MockTransport(_offline) if offline else None
    with console.status("fetching today's papers from Hugging Face..."):
        papers = demo_mod.fetch_or_sample(
            base_url=settings.hf_api_base, today=utcnow().date(), transport=transport
        )
    console.print(escape(papers.note))
    now = utcnow()
    prepared = demo_mod.prepare(w, papers=papers, now=now)
    report, edition_id = prepared.hf, prepared.edition_id
    console.print(
        f"ingested  {report.fetched} papers from Hugging Face ({report.inserted} new, "
        f"{len(report.rejected)} rejected)"
    )
    console.print(f"ingested  {escape(prepared.arxiv_note)}", highlight=False)
    followers = ", ".join(f"{e} ({', '.join(c)})" for e, c in demo_mod.arxiv_followers())
    if papers.live:
        console.print(
            "          (outside today's live edition: `papermail demo --offline` sends them "
            f"to {followers})",
            highlight=False,
        )
    else:
        console.print(
            f"          papers only arXiv announced go only to readers who follow one of "
            f"their categories: {followers}",
            highlight=False,
        )
    if edition_id is None:
        raise Fail("no papers to build an edition from")
    with w.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        console.print(edition_table(edition, top=10))
    with sending(w) as dispatcher:
        stages.plan(w, dispatcher=dispatcher, now=now, due_only=False, edition_ids=[edition_id])
    _print_deliveries(w, edition_id)
    fail_if_nothing_went_out(w, edition_id)
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


def _offline(request: httpx.Request) -> NoReturn:
    raise httpx.ConnectError("--offline given", request=request)


def _print_deliveries(w: Wiring, edition_id: int) -> None:
    with w.sessions() as session:
        rows = session.execute(
            select(
                Subscriber.email,
                Subscriber.format,
                Subscriber.topics,
                Subscriber.arxiv_categories,
                Delivery.status,
                Delivery.variant_key,
            )
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.edition_id == edition_id)
            .order_by(Subscriber.id)
        ).all()
    table = Table("to", "format", "topics", "arXiv", "status", "variant", title="emails written")
    for email, fmt, topics, categories, status, key in rows:
        table.add_row(
            plain(email),
            fmt.value,
            plain(", ".join(topics or []) or "-"),
            plain(", ".join(categories or []) or "-"),
            status.value,
            key[:10],
        )
    console.print(table)
