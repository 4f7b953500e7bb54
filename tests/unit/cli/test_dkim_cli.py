"""`papermail dkim keygen`: a 0600 key, never overwritten, and a record that verifies."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import dkim
import pytest
from click.testing import CliRunner, Result

from papermail.cli.main import main
from papermail.config import get_settings
from papermail.delivery.dkim import DkimSigner
from papermail.delivery.dkim_keys import load_private_key
from tests.support.dkim import dns_with

MESSAGE = b"From: digest@papermail.localhost\r\nTo: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["dkim", "keygen", *args], catch_exceptions=False)


def published(output: str) -> tuple[str, str]:
    """The record's name and text, as a resolver would join its strings."""
    match = re.search(r"^(\S+)\. IN TXT ((?:\"[^\"]*\" ?)+)$", output, re.MULTILINE)
    assert match, output
    return match[1], "".join(re.findall(r"\"([^\"]*)\"", match[2]))


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_writes_a_0600_key_and_a_record_that_verifies(var_dir: Path, algorithm: str) -> None:
    result = run("--algorithm", algorithm, "--selector", "s2026")
    assert result.exit_code == 0, result.output
    path = var_dir / "dkim" / "s2026.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    name, text = published(result.output)
    assert name == "s2026._domainkey.papermail.localhost"
    assert text.startswith(f"v=DKIM1; k={algorithm}; p=")
    assert f"PAPERMAIL_DKIM_PRIVATE_KEY_PATH={path}" in result.output
    signer = DkimSigner(
        load_private_key(path.read_bytes()), selector="s2026", domain="papermail.localhost"
    )
    assert dkim.verify(signer.sign(MESSAGE), dnsfunc=dns_with({name: text}))


def test_keygen_never_overwrites_a_key(var_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "keys" / "k.pem"
    out.parent.mkdir()
    out.write_text("the key in use")
    result = run("--out", str(out))
    assert result.exit_code == 1
    assert "exists; papermail never overwrites a key" in result.output
    assert out.read_text() == "the key in use"


def test_keygen_refuses_a_bad_selector_and_the_one_in_use(
    var_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "--selector must be a DNS name" in run("--selector", "a b").output
    first = run("--selector", "old", "--out", str(tmp_path / "old.pem"))
    assert first.exit_code == 0, first.output
    monkeypatch.setenv("PAPERMAIL_DKIM_SELECTOR", "old")
    monkeypatch.setenv("PAPERMAIL_DKIM_PRIVATE_KEY_PATH", str(tmp_path / "old.pem"))
    get_settings.cache_clear()
    again = run("--selector", "old")
    assert again.exit_code == 1
    assert "old is the selector in use: a new key needs a new selector" in again.output
    rotated = run("--selector", "new", "--domain", "mail.example.org")
    assert rotated.exit_code == 0, rotated.output
    assert published(rotated.output)[0] == "new._domainkey.mail.example.org"
    assert "PAPERMAIL_DKIM_DOMAIN=mail.example.org" in rotated.output
