"""`papermail bounces serve` and `papermail bounces poll` (embedded, in a throwaway dir)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from click.testing import CliRunner

from papermail.bounces.verp import Verp
from papermail.cli import bounces as bounce_cli
from papermail.cli.main import main
from papermail.config import get_settings
from tests.unit.bounces.test_receiver import free_port


def test_poll_without_a_mailbox_says_what_to_set(var_dir: Path) -> None:
    result = CliRunner().invoke(main, ["bounces", "poll"])

    assert result.exit_code == 1
    assert "PAPERMAIL_BOUNCE_MAILBOX_HOST" in result.output


def test_serve_listens_until_stopped_and_takes_only_bounce_addresses(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERMAIL_BOUNCE_DOMAIN", "bounces.papers.example.org")
    get_settings.cache_clear()
    port = free_port()
    settings = get_settings()
    verp = Verp(settings.secret_key.get_secret_value(), domain="bounces.papers.example.org")
    replies: dict[str, object] = {}

    def talk_to_the_server() -> None:
        """In place of waiting for a signal: one SMTP session, then stop."""
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            client.mail("")
            replies["foreign"] = client.rcpt("someone@example.org")[0]
            replies["forged"] = client.rcpt(f"bounces+d1-{'a' * 16}@bounces.papers.example.org")[0]
            replies["verp"] = client.rcpt(verp.address(delivery_id=1))[0]
            replies["data"] = client.data(b"Subject: not a bounce\r\n\r\nhello\r\n")[0]

    monkeypatch.setattr(bounce_cli, "wait_until_stopped", talk_to_the_server)

    result = CliRunner().invoke(main, ["bounces", "serve", "--port", str(port)])

    assert result.exit_code == 0, result.output
    assert f"127.0.0.1:{port}" in result.output
    # Only signed bounce addresses; a message that is no bounce is taken and dropped (250).
    assert replies == {"foreign": 550, "forged": 550, "verp": 250, "data": 250}
