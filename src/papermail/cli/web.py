"""``papermail web``: the subscriber pages, /ops and /metrics."""

from __future__ import annotations

import logging

import click
from rich.markup import escape

from papermail.cli.common import console, wiring


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def web(host: str, port: int) -> None:
    """Serve the subscriber pages: landing, subscribe, preferences, unsubscribe, archive."""
    import uvicorn

    from papermail.web.app import create_app

    w = wiring()  # embedded: a brand-new SQLite file gets its schema here
    # Our access log (tokens redacted) instead of uvicorn's, which prints full URLs.
    logging.getLogger("papermail.web.access").setLevel(logging.INFO)
    console.print(
        escape(f"papermail web on http://{host}:{port} (links say {w.settings.base_url})")
    )
    uvicorn.run(
        create_app(w),
        host=host,
        port=port,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=w.settings.forwarded_allow_ips,
        server_header=False,
    )
