"""The ``papermail`` command: the root group and where each command lives."""

from __future__ import annotations

import logging

import click
from pydantic import ValidationError

from papermail import __version__
from papermail.cli import bench, bounces, db, demo, dkim, ops, pipeline, status, subscribers, web
from papermail.cli.common import Fail
from papermail.config import describe_errors, get_settings
from papermail.logging_setup import configure_logging


def _rank(level: str) -> int:
    return logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)


@click.group()
@click.version_option(__version__, "--version", prog_name="papermail")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def main(verbose: bool) -> None:
    """papermail: the day's trending research papers, delivered by email."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise Fail(f"bad configuration: {describe_errors(exc)}") from exc
    configure_logging(
        json=settings.log_json,
        level="INFO" if verbose else max(settings.log_level, "WARNING", key=_rank),
    )


for command in (
    db.db,
    pipeline.ingest,
    pipeline.rank,
    pipeline.send,
    pipeline.preview,
    subscribers.subscribers,
    demo.demo,
    web.web,
    status.status,
    ops.pause,
    ops.resume,
    ops.retry_failed,
    ops.resend,
    ops.reingest,
    bounces.bounces,
    dkim.dkim,
    bench.bench,
):
    main.add_command(command)
