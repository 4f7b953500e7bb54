"""``papermail bench``: the delivery benchmark, from the developer tools.

The benchmark lives in the papermail-dev package (tools/), which a production install
does not carry; without it the command says how to get it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from papermail.cli.common import Fail, console

ARXIV_PAPERS = 500


@click.command()
@click.option("--subscribers", "-n", type=int, default=10_000, show_default=True)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Send workers (one pipeline worker plans beside them).",
)
@click.option(
    "--concurrency", type=int, default=4, show_default=True, help="Pool size per send worker."
)
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option(
    "--pg-admin-url",
    default="postgresql://postgres@127.0.0.1:5432/test",
    show_default=True,
    help="A database to connect to while creating the scratch one.",
)
@click.option(
    "--redis-url",
    default="redis://127.0.0.1:6379/10",
    show_default=True,
    help="Broker for the run; this Redis database is flushed before and after.",
)
@click.option(
    "--async-commit",
    is_flag=True,
    help="Run with PAPERMAIL_LEDGER_ASYNC_COMMIT (see README, 'Exactly once').",
)
@click.option(
    "--feedback-histories",
    is_flag=True,
    help="Give every reader 3-12 feedback marks and a blend weight: selections of their own.",
)
@click.option(
    "--plan-only",
    is_flag=True,
    help="Seed, then plan in this process (no workers, no SMTP): planning time, CPU and RSS.",
)
@click.option(
    "--send-in-process",
    is_flag=True,
    help="Seed and plan, then send every batch from this process, one at a time (no "
    "Celery, nothing else running): the send path's own CPU per email.",
)
@click.option(
    "--arxiv-pool",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Add papers of this corpus (the evaluation's shape: ../shared/corpus) to the edition "
    "as new on arXiv, and have readers follow arXiv categories: an arXiv-ingesting pool.",
)
@click.option(
    "--arxiv-papers",
    type=click.IntRange(min=1),
    help=f"With --arxiv-pool: how many of its papers (default {ARXIV_PAPERS}, about two days "
    "of arXiv's busiest fields: a daily edition's window).",
)
@click.option(
    "--typed-topics",
    type=click.IntRange(min=1),
    help="Readers type this many distinct topics between them (phrases of the pool's papers, "
    "0-2 a reader), as a real list's do; by default they pick from twelve.",
)
@click.option("--json-out", type=click.Path(path_type=Path), help="Also write the figures as JSON.")
def bench(
    subscribers: int,
    workers: int,
    concurrency: int,
    batch_size: int,
    pg_admin_url: str,
    redis_url: str,
    async_commit: bool,
    feedback_histories: bool,
    plan_only: bool,
    send_in_process: bool,
    arxiv_pool: Path | None,
    arxiv_papers: int | None,
    typed_topics: int | None,
    json_out: Path | None,
) -> None:
    """Deliver one edition to N synthetic subscribers on PostgreSQL, Redis, Celery and SMTP.

    With --plan-only, plan it for them in this process and report planning alone; with
    --send-in-process, plan, then send from this process and report the send path alone.
    """
    if plan_only and async_commit:
        raise click.UsageError("--async-commit is about sending; --plan-only sends nothing")
    if plan_only and send_in_process:
        raise click.UsageError("choose --plan-only or --send-in-process, not both")
    if arxiv_papers is not None and arxiv_pool is None:
        raise click.UsageError("--arxiv-papers says how many of --arxiv-pool's papers: give both")
    arxiv_papers = arxiv_papers or ARXIV_PAPERS
    try:
        from papermail_dev.bench import (
            ArxivPool,
            ArxivPoolError,
            BenchConfig,
            TypedTopicsError,
            report_lines,
            run_bench,
            run_plan_only,
            run_send_in_process,
            send_path_report_lines,
        )
    except ImportError as exc:
        raise Fail(
            "papermail bench needs the developer tools, which a production install leaves out: "
            "from a checkout, `pip install -e ./tools` (`make bench` and `make test` do it)"
        ) from exc

    config = BenchConfig(
        subscribers=subscribers,
        workers=workers,
        concurrency=concurrency,
        batch_size=batch_size,
        pg_admin_url=pg_admin_url,
        redis_url=redis_url,
        ledger_async_commit=async_commit,
        feedback_histories=feedback_histories,
        plan_only=plan_only,
        arxiv_pool=None if arxiv_pool is None else ArxivPool(arxiv_pool, arxiv_papers),
        typed_topics=typed_topics,
    )
    commit = "async ledger commit" if async_commit else "durable ledger commit"
    if plan_only:
        mode = "planning only"
    elif send_in_process:
        mode = f"the send path in one process, {commit}"
    else:
        mode = commit
    if feedback_histories:
        mode += ", feedback histories"
    if arxiv_pool is not None:
        mode += f", {arxiv_papers:,} papers new on arXiv"
    if typed_topics is not None:
        mode += f", {typed_topics:,} typed topics"
    console.rule(f"papermail bench: {subscribers:,} subscribers, {mode}")
    # A corpus that cannot give the pool asked for (or papers the topics) is found while
    # seeding, after the scratch database exists (the run drops it on the way out): one
    # line, no traceback.
    try:
        if plan_only:
            planned = run_plan_only(config, log=console.print)
            _report(report_lines(planned), planned.as_json(), json_out)
            if planned.planned != subscribers:
                raise click.ClickException("planning did not plan one row per subscriber")
            return
        if send_in_process:
            path = run_send_in_process(config, log=console.print)
            _report(send_path_report_lines(path), path.as_json(), json_out)
            if path.notes or path.duplicates:
                raise click.ClickException("not every planned row was sent exactly once")
            return
        result = run_bench(config, log=console.print)
        _report(report_lines(result), result.as_json(), json_out)
        if result.delivered != subscribers or result.duplicates:
            raise click.ClickException("not every subscriber got exactly one message")
    except (ArxivPoolError, TypedTopicsError) as exc:
        raise Fail(str(exc)) from exc


def _report(lines: str, figures: str, json_out: Path | None) -> None:
    console.print(lines, highlight=False)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(json.loads(figures), indent=2))
