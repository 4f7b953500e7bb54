"""``papermail dkim keygen``: a new DKIM key, and the DNS record that publishes it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from rich.markup import escape

from papermail.cli.common import Fail, console
from papermail.config import get_settings


@click.group()
def dkim() -> None:
    """DKIM signing: make a key and the TXT record to publish (docs/operations.md)."""


@dkim.command()
@click.option(
    "--algorithm",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa: 2048 bits, verified by every receiver; ed25519: RFC 8463, verified by few yet.",
)
@click.option("--selector", help="Name the key is published under; default papermailYYYYMM.")
@click.option("--domain", help="The signing domain; default PAPERMAIL_DKIM_DOMAIN or the mail's.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (never overwritten); default $VAR_DIR/dkim/SELECTOR.pem.",
)
def keygen(algorithm: str, selector: str | None, domain: str | None, out: Path | None) -> None:
    """Write a new private key (mode 0600) and print the TXT record to publish."""
    # Here, not at the top: dkimpy and cryptography load in ~0.1 s, every command would pay it.
    from papermail.delivery.dkim_keys import check_dns_name, txt_record, write_new_key

    settings = get_settings()
    selector = selector or f"papermail{dt.date.today():%Y%m}"
    domain = (domain or settings.effective_dkim_domain).lower()
    try:
        check_dns_name(selector, "--selector")
        check_dns_name(domain, "--domain")
    except ValueError as exc:
        raise Fail(str(exc)) from exc
    if selector == settings.dkim_selector:
        raise Fail(f"{selector} is the selector in use: a new key needs a new selector")
    path = out or settings.var_dir / "dkim" / f"{selector}.pem"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        key = write_new_key(path, "ed25519" if algorithm == "ed25519" else "rsa")
    except FileExistsError as exc:
        raise Fail(f"{path} exists; papermail never overwrites a key") from exc
    except OSError as exc:
        raise Fail(f"cannot write {path}: {exc.strerror or exc}") from exc
    console.print(f"wrote {escape(str(path))} ({algorithm}, mode 0600). Publish this record:")
    click.echo(txt_record(selector, domain, key))  # one line, never wrapped: it is pasted
    console.print("then, once it resolves, set:")
    click.echo(f"PAPERMAIL_DKIM_SELECTOR={selector}")
    click.echo(f"PAPERMAIL_DKIM_PRIVATE_KEY_PATH={path.resolve()}")
    if domain != settings.mail_domain:
        click.echo(f"PAPERMAIL_DKIM_DOMAIN={domain}")
