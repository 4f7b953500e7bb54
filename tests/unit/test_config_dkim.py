"""DKIM settings: a usable key and selector, or one clear line saying what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from papermail.config import Settings, describe_errors
from papermail.delivery.dkim_keys import generate_private_key, private_key_pem, write_new_key
from papermail.wiring import Wiring, make_dkim_signer
from tests.support.dkim import verifies


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(  # type: ignore[arg-type]
        _env_file=None,
        var_dir=tmp_path / "var",
        mail_from="papermail <digest@papers.example.org>",
        **overrides,
    )


def error_line(tmp_path: Path, **overrides: object) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(tmp_path, **overrides)
    line = describe_errors(caught.value)
    assert "\n" not in line
    return line


@pytest.fixture
def rsa_path(tmp_path: Path) -> Path:
    path = tmp_path / "dkim.pem"
    write_new_key(path, "rsa")
    return path


def test_without_dkim_settings_nothing_is_signed(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.dkim_key is None
    assert make_dkim_signer(s) is None


def test_a_key_file_and_selector_make_a_signer_for_the_mail_domain(
    tmp_path: Path, rsa_path: Path
) -> None:
    s = settings(tmp_path, dkim_selector="s2026", dkim_private_key_path=rsa_path)
    signer = Wiring(s).dkim
    assert signer is not None
    assert (signer.algorithm, signer.selector, signer.domain) == (
        "rsa",
        "s2026",
        "papers.example.org",
    )


def test_an_inline_key_with_escaped_line_breaks_and_another_domain(tmp_path: Path) -> None:
    key = generate_private_key("ed25519")
    inline = private_key_pem(key).decode().replace("\n", "\\n")  # as a .env line carries it
    s = settings(tmp_path, dkim_selector="ed1", dkim_private_key=inline, dkim_domain="Example.ORG")
    signer = make_dkim_signer(s)
    assert signer is not None and signer.algorithm == "ed25519"
    message = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
    assert verifies(signer.sign(message), selector="ed1", domain="example.org", key=key)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"dkim_selector": "s1"}, "PAPERMAIL_DKIM_SELECTOR is set but there is no DKIM key"),
        ({"dkim_domain": "example.org"}, "PAPERMAIL_DKIM_DOMAIN is set but there is no DKIM key"),
        ({"dkim_algorithm": "rsa"}, "PAPERMAIL_DKIM_ALGORITHM is set but there is no DKIM key"),
        ({"dkim_private_key_path": "KEY"}, "PAPERMAIL_DKIM_SELECTOR is not set"),
        (
            {"dkim_private_key_path": "KEY", "dkim_private_key": "x", "dkim_selector": "s1"},
            "PAPERMAIL_DKIM_PRIVATE_KEY_PATH or PAPERMAIL_DKIM_PRIVATE_KEY, not both",
        ),
        (
            {"dkim_private_key_path": "MISSING", "dkim_selector": "s1"},
            "cannot read it: No such file or directory",
        ),
        (
            {"dkim_private_key_path": "KEY", "dkim_selector": "s1", "dkim_algorithm": "ed25519"},
            "PAPERMAIL_DKIM_ALGORITHM is ed25519 but PAPERMAIL_DKIM_PRIVATE_KEY_PATH",
        ),
        (
            {"dkim_private_key_path": "KEY", "dkim_selector": "bad selector"},
            "PAPERMAIL_DKIM_SELECTOR must be a DNS name",
        ),
        (
            {"dkim_private_key_path": "KEY", "dkim_selector": "s1", "dkim_domain": "a b"},
            "PAPERMAIL_DKIM_DOMAIN must be a DNS name",
        ),
        (
            {"dkim_private_key": "not a key", "dkim_selector": "s1"},
            "PAPERMAIL_DKIM_PRIVATE_KEY is neither a PEM private key nor",
        ),
    ],
)
def test_a_bad_dkim_setting_is_one_clear_line(
    tmp_path: Path, rsa_path: Path, overrides: dict[str, object], complaint: str
) -> None:
    paths = {"KEY": rsa_path, "MISSING": tmp_path / "missing.pem"}
    overrides = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()}
    assert complaint in error_line(tmp_path, **overrides)


def test_a_key_of_the_wrong_type_names_the_file_and_the_type(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    line = error_line(tmp_path, dkim_selector="s1", dkim_private_key_path=path)
    assert f"PAPERMAIL_DKIM_PRIVATE_KEY_PATH ({path}) is an EC (secp256r1) key" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_says_so(tmp_path: Path, rsa_path: Path) -> None:
    rsa_path.chmod(0)
    line = error_line(tmp_path, dkim_selector="s1", dkim_private_key_path=rsa_path)
    assert "cannot read it: Permission denied" in line


def test_a_directory_is_not_a_key(tmp_path: Path) -> None:
    line = error_line(tmp_path, dkim_selector="s1", dkim_private_key_path=tmp_path)
    assert "cannot read it: Is a directory" in line
