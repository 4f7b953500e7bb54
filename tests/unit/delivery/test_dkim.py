"""DKIM signing: dkimpy verifies what papermail signs, and gets the same bytes signing it."""

from __future__ import annotations

import base64
import datetime as dt
import random
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.util import parse_tag_value

from papermail.delivery import dkim as papermail_dkim
from papermail.delivery.dkim import SIGNED_HEADERS, DkimError, DkimSigner
from papermail.delivery.dkim_keys import (
    Algorithm,
    DkimKeyError,
    PrivateKey,
    algorithm_of,
    generate_private_key,
    load_private_key,
    private_key_pem,
    txt_record,
    write_new_key,
)
from papermail.pipeline.messages import ListHeaders, build_message
from tests.support.dkim import dns_with, verifies

SELECTOR, DOMAIN = "mail2026", "papers.example.org"
NOW = 1_790_000_000.0  # 2026-09: a t= in the future fails verification
REQUIRED = {
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
}


@pytest.fixture(scope="module")
def rsa_key() -> PrivateKey:
    return generate_private_key("rsa")


@pytest.fixture(scope="module")
def ed_key() -> PrivateKey:
    return generate_private_key("ed25519")


@pytest.fixture(params=["rsa", "ed25519"])
def key(request: pytest.FixtureRequest, rsa_key: PrivateKey, ed_key: PrivateKey) -> PrivateKey:
    return rsa_key if request.param == "rsa" else ed_key


def signer(key: PrivateKey) -> DkimSigner:
    return DkimSigner(key, selector=SELECTOR, domain=DOMAIN, clock=lambda: NOW)


def digest_like(**changes: str) -> bytes:
    """A list message as build_message makes them: every header the digest has."""
    fields = {
        "subject": "Trending papers, 27 Nov: Gated State Mixing",
        "unsubscribe": "https://papers.example.org/unsubscribe/7.1.abc-DEF_123",
    } | changes
    return build_message(
        sender="papermail <digest@papers.example.org>",
        to="reader@example.net",
        subject=fields["subject"],
        text="Today's papers:\n\n    1. Gated  State Mixing\n    https://example.org/1\n" * 40,
        html_body="<p>Today's papers</p>\n  <ol>\n    <li>Gated State Mixing</li>\n  </ol>\n",
        message_id="<papermail.e1.d7@papers.example.org>",
        date=dt.datetime(2026, 11, 27, 7, 0, tzinfo=dt.UTC),
        list_headers=ListHeaders(
            list_id="papermail daily papers <daily.papers.example.org>",
            unsubscribe_url=fields["unsubscribe"],
        ),
    )


def signed_headers(signed: bytes) -> list[bytes]:
    value = signed.split(b"\r\n\r\n", 1)[0].split(b"DKIM-Signature:", 1)[1]
    value = value.split(b"\r\n", 1)[0] + b"".join(
        line for line in value.split(b"\r\n")[1:] if line.startswith((b" ", b"\t"))
    )
    return [h.strip() for h in parse_tag_value(value.strip())[b"h"].split(b":")]


def replace_header(message: bytes, name: bytes, value: bytes) -> bytes:
    lines = message.split(b"\r\n")
    at = next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower() + b":"))
    end = at + 1
    while lines[end].startswith((b" ", b"\t")):
        end += 1
    return b"\r\n".join([*lines[:at], name + b": " + value, *lines[end:]])


# --- signing and verifying ---------------------------------------------------------------


def test_a_signed_message_verifies_with_dkimpy(key: PrivateKey) -> None:
    signed = signer(key).sign(digest_like())
    assert signed.startswith(b"DKIM-Signature: v=1; a=")
    assert verifies(signed, selector=SELECTOR, domain=DOMAIN, key=key)


def test_the_signature_covers_the_eight_headers_oversigned_and_relaxed(key: PrivateKey) -> None:
    signed = signer(key).sign(digest_like())
    names = signed_headers(signed)
    assert set(names) >= REQUIRED
    for name in REQUIRED:  # each present once, signed twice: a second one breaks it
        assert names.count(name) == 2, name
    head = signed.split(b"\r\n\r\n", 1)[0]
    assert b"c=relaxed/relaxed" in head
    assert f"d={DOMAIN}".encode() in head and f"s={SELECTOR}".encode() in head


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Subject", b"You won a prize"),
        (b"List-Unsubscribe", b"<https://evil.example/unsubscribe>"),
        (b"List-Unsubscribe-Post", b"List-Unsubscribe=Nope"),
        (b"From", b"papermail <digest@evil.example>"),
    ],
)
def test_a_header_altered_after_signing_fails(key: PrivateKey, name: bytes, value: bytes) -> None:
    signed = signer(key).sign(digest_like())
    assert not verifies(
        replace_header(signed, name, value), selector=SELECTOR, domain=DOMAIN, key=key
    )


def test_an_added_second_subject_or_a_changed_body_fails(key: PrivateKey) -> None:
    signed = signer(key).sign(digest_like())
    added = signed.replace(b"\r\nSubject:", b"\r\nSubject: Act now\r\nSubject:", 1)
    assert not verifies(added, selector=SELECTOR, domain=DOMAIN, key=key)
    edited = signed.replace(b"Gated", b"Gates", 1)
    assert not verifies(edited, selector=SELECTOR, domain=DOMAIN, key=key)


def test_relaxed_canonicalization_survives_refolding_and_trailing_blank_lines(
    key: PrivateKey,
) -> None:
    signed = signer(key).sign(digest_like())
    refolded = signed.replace(b"\r\nSubject: ", b"\r\nSubject:    ", 1) + b"\r\n\r\n"
    assert verifies(refolded, selector=SELECTOR, domain=DOMAIN, key=key)


def test_the_wrong_public_key_fails(rsa_key: PrivateKey) -> None:
    signed = signer(rsa_key).sign(digest_like())
    assert not verifies(signed, selector=SELECTOR, domain=DOMAIN, key=generate_private_key("rsa"))


def test_a_signer_is_the_callable_sending_takes(key: PrivateKey) -> None:
    s, message = signer(key), digest_like()
    assert s(message) == s.sign(message)


def test_a_message_without_from_is_refused(key: PrivateKey) -> None:
    message = b"To: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    with pytest.raises(DkimError, match="From"):
        signer(key).sign(message)


# --- the same bytes as dkimpy's own sign(), hostile messages included ----------------------


def dkimpy_sign(
    key: PrivateKey,
    message: bytes,
    include: list[bytes],
    *,
    selector: str = SELECTOR,
    domain: str = DOMAIN,
) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        secret, algorithm = private_key_pem(key), b"rsa-sha256"
    else:
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        secret, algorithm = base64.b64encode(raw), b"ed25519-sha256"
    return dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        secret,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include,
        signature_algorithm=algorithm,
    )


HEADER_NAMES = [b"From", b"from", b"FROM", b"To", b"Subject", b"SUBJECT", b"Date", b"X-Other"]
HEADER_NAMES += [b"List-Unsubscribe", b"list-id", b"Content-Type", b"Received", b"Reply-To"]
VALUE_BITS = [b"a", b"Zz", b" ", b"  ", b"\t", b" \t ", b"=?utf-8?q?x?=", b"\xc3\xa9", b":", b";"]
BODY_BITS = [b"word", b" ", b"  ", b"    ", b"\t", b" \t", b"\r\n", b"\r\n\r\n", b".", b"="]
BODY_BITS += [b"\r", b"\n", b"\xff", b"\x0b", b"\x0c", b"\x00"]


def hostile_message(rng: random.Random) -> bytes:
    """Odd headers always; a body that is plain enough for the fast path (no tab, no bare
    LF, no space before a CRLF) 60% of the time, anything at all otherwise."""
    lines = [b"From: x@papers.example.org"]
    for _ in range(rng.randrange(0, 8)):
        value = b"".join(rng.choices(VALUE_BITS, k=rng.randrange(0, 6)))
        colon = rng.choices([b":", b": ", b":\t", b" :"], weights=[3, 3, 3, 1])[0]
        line = rng.choice(HEADER_NAMES) + colon + value
        if rng.random() < 0.25:  # a folded continuation
            line += b"\r\n" + rng.choice([b" ", b"\t", b"  "]) + b"more" + rng.choice([b"", b" "])
        lines.insert(rng.randrange(0, len(lines) + 1), line)
    plain = rng.random() < 0.6
    bits = [b for b in BODY_BITS if b not in (b"\t", b" \t", b"\n")] if plain else BODY_BITS
    body = b"".join(rng.choices(bits, k=rng.randrange(0, 60)))
    if plain:
        body = re.sub(rb" +\r\n", b"\r\n", body)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class CountingRelaxed:
    """Stands in for dkimpy's Relaxed inside papermail's module only: counts the bodies
    that took dkimpy's full canonicalization (the verifier keeps the real one)."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls = 0
        self.refuse = refuse

    def canonicalize_body(self, body: bytes) -> bytes:
        assert not self.refuse, "the full canonicalization ran"
        self.calls += 1
        return dkim.canonicalization.Relaxed.canonicalize_body(body)


def test_the_signature_is_byte_for_byte_dkimpys_on_hostile_messages(
    key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)  # dkimpy's t=
    full = CountingRelaxed()
    monkeypatch.setattr(papermail_dkim, "Relaxed", full)
    rng = random.Random(2026)
    s = signer(key)
    count, refused = 400, 0
    for _ in range(count):
        message = hostile_message(rng)
        try:
            dkim.rfc822_parse(message)
        except (dkim.MessageFormatError, IndexError):  # "Subject :": dkimpy refuses; so do we
            with pytest.raises(DkimError, match="cannot parse"):
                s.signature(message)
            refused += 1
            continue
        ours = s.signature(message)
        include = signed_headers(ours + message)
        assert ours == dkimpy_sign(key, message, include), message
        assert verifies(ours + message, selector=SELECTOR, domain=DOMAIN, key=key), message
    signed = count - refused
    assert signed > 250 and 50 < full.calls < signed - 100  # both paths, the fast one most


def test_a_real_digest_takes_the_fast_path(
    key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(papermail_dkim, "Relaxed", CountingRelaxed(refuse=True))
    message = digest_like()
    assert b"    " in message  # indented, so whitespace is really compressed
    assert verifies(signer(key).sign(message), selector=SELECTOR, domain=DOMAIN, key=key)


# Each branch around the fast path: (message, whether dkimpy's full canonicalization runs).
ODD_MESSAGES = {
    "a tab in the body": (b"From: a@b.example\r\n\r\n\tindented  text\r\n", True),
    "a space before a CRLF": (b"From: a@b.example\r\n\r\nline  \r\nnext\r\n", True),
    "a bare LF in the body": (b"From: a@b.example\r\n\r\none\ntwo  three\r\n", True),
    "a bare LF in the headers": (b"From: a@b.example\nTo: c@d.example\r\n\r\nx  y\r\n", True),
    "LF line ends": (b"From: a@b.example\nSubject:  hi\n\nbody  x\n\n", True),
    "no blank line": (b"From: a@b.example", True),
    "an mbox From line": (b"From a@b.example Mon Jan  1\r\nFrom: a@b.example\r\n\r\nx\r\n", False),
    "a bare CR": (b"From: a@b.example\r\nSubject: a\rb \r\n\r\nx \ry  z\r\n", False),
    "odd header whitespace": (
        b"From:\r\n\tx@b.example  \r\n  (me)\r\nSubject:\x0b a \x0c\r\n\r\n  x  y\r\n\r\n\r\n",
        False,
    ),
    "an empty body": (b"From: a@b.example\r\nTo: c@d.example\r\n\r\n", False),
    "spaces only": (b"From: a@b.example\r\n\r\n    ", False),
}


@pytest.mark.parametrize(("message", "full"), ODD_MESSAGES.values(), ids=ODD_MESSAGES.keys())
def test_odd_messages_are_signed_as_dkimpy_signs_them(
    key: PrivateKey, message: bytes, full: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    counting = CountingRelaxed()
    monkeypatch.setattr(papermail_dkim, "Relaxed", counting)
    ours = signer(key).signature(message)
    assert counting.calls == full
    assert ours == dkimpy_sign(key, message, signed_headers(ours + b"\r\n"))
    assert verifies(ours + message, selector=SELECTOR, domain=DOMAIN, key=key)


LONG_NAME = "x-" + "h" * 70  # longer than a folded line: the fold cuts it


@pytest.mark.parametrize(
    ("selector", "domain", "now", "headers"),
    [
        ("s" * 63, f"{'a' * 63}.{'b' * 63}.{'c' * 63}.example", NOW, SIGNED_HEADERS),
        ("k", f"{'d' * 60}.{'e' * 6}", NOW, SIGNED_HEADERS),  # "i=@...;" fills a line
        ("mail2026", DOMAIN, NOW, ("from", LONG_NAME, "subject")),
        ("k", "x.io", 5.0, SIGNED_HEADERS),
        ("mail2026", DOMAIN, 12_345_678_901.0, SIGNED_HEADERS),
    ],
)
def test_the_field_folds_as_dkimpys_with_long_names_and_any_t(
    key: PrivateKey,
    selector: str,
    domain: str,
    now: float,
    headers: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: now)
    message = f"{LONG_NAME}: v\r\n".encode() + digest_like()
    s = DkimSigner(key, selector=selector, domain=domain, headers=headers, clock=lambda: now)
    ours = s.signature(message)
    # h= as written, a cut inside a name undone (signed_headers would keep the SP)
    value = ours.split(b":", 1)[1].replace(b"\r\n ", b"")
    include = [name.strip() for name in parse_tag_value(value.strip())[b"h"].split(b":")]
    assert ours == dkimpy_sign(key, message, include, selector=selector, domain=domain)


def test_fold_is_dkimpys_fold() -> None:
    rng = random.Random(6376)
    words = [b"a", b"xyz", b"=", b";", b"", b"0123456789" * 3, b"Zz" * 40]
    for _ in range(3000):
        separators = rng.choices([b" ", b"  ", b"; ", b" : "], k=rng.randrange(0, 40))
        text = b"".join(rng.choice(words) + separator for separator in separators)
        text += rng.choice([b"", b"x", b"\r\n"])
        expected = dkim.fold(text, namelen=len(b"DKIM-Signature"), linesep=b"\r\n")
        assert b"\r\n ".join(papermail_dkim._fold(text)) == expected, text


@pytest.mark.parametrize("name", ["b=x", "x;y", "x y", "x:y", "", "subject\r\n"])
def test_header_names_that_would_break_the_tag_list_are_refused(
    rsa_key: PrivateKey, name: str
) -> None:
    with pytest.raises(ValueError, match="cannot sign a header"):
        DkimSigner(rsa_key, selector=SELECTOR, domain=DOMAIN, headers=("from", name))


# --- keys ----------------------------------------------------------------------------------


def test_keys_load_from_pkcs8_pkcs1_and_dknewkeys_ed25519_seed(rsa_key: PrivateKey) -> None:
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    pkcs1 = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert load_private_key(pkcs1).private_numbers() == rsa_key.private_numbers()
    assert load_private_key(private_key_pem(rsa_key)).key_size == 2048
    seed = base64.b64encode(bytes(range(32)))
    assert algorithm_of(load_private_key(seed + b"\n")) == "ed25519"


# Too short to sign with, and too short for cryptography to make (a throwaway test key).
RSA_768 = b"""-----BEGIN PRIVATE KEY-----
MIIB5gIBADANBgkqhkiG9w0BAQEFAASCAdAwggHMAgEAAmEA1dUhj/KmNZIYmg0p
3EvEPDUifTZXQW7r2GTKj1Ed/dyVtwNAsSfp9QGv1pD+9mzQWEeTJnGESv0FlyHd
nagsyeR0wWZN1zgq9qUA60moLGHYrHXGfWIIRsL0d/3RBJPPAgMBAAECYQCrizBB
qwhsMahK7gSHFsF3C6l/ifi2JaZPE4ztLMZCwpPZHmLnvH2UcKYAHJJuXxvM0Ze5
dFGdhUKscSfJSN8KBLbOweKf6Mcty0xwwEHcSTKv4hLq2frLK0XSLmqHSQECMQD/
zBl65Rd+5M5Qwc+Nvva5vY/lvZEGsbTE5AHZ20T3Jp7Fv0ux9HbSpE9UaQFGB1sC
MQDWAIReDRJ+sz+aQvmtgx0Khj9KUlUwwwnLc24GnkmEBMZSbxqYahzheHdXrhG0
A50CMQDF5xKPkk7rTfqRYGFEOUqJya9a/58EnthMvFryQkLJNIgCVk4qEAkeTyFR
HSxvEaECMQCkS/NT7b9UTLO48FCWGQJT0SuIGNvUuvirHSzMofuZAr1sDmahu13+
8KjXRQnMZbUCMF1Pto2VGx2ENZpa3R+Vp4XEsxMnFVg+cPKT/UtlHf5wMxxbwDdP
jPW0rgpAAUglgw==
-----END PRIVATE KEY-----
"""


def ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def encrypted_key_pem() -> bytes:
    return generate_private_key("ed25519").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (lambda: b"", "is empty"),
        (
            lambda: b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
            "not a PEM",
        ),
        (lambda: b"hello", "neither a PEM private key nor a base64 Ed25519 seed"),
        (ec_key_pem, "is an EC (secp256r1) key; DKIM signs with RSA or Ed25519"),
        (lambda: RSA_768, "768-bit RSA key; DKIM needs at least 1024"),
        (encrypted_key_pem, "encrypted"),
    ],
)
def test_unusable_keys_are_refused_saying_why(data: Callable[[], bytes], complaint: str) -> None:
    with pytest.raises(DkimKeyError, match=re.escape(complaint)):
        load_private_key(data())


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_new_key_is_0600_never_overwritten_and_its_record_verifies(
    tmp_path: Path, algorithm: Algorithm
) -> None:
    path = tmp_path / "dkim.pem"
    key = write_new_key(path, algorithm)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path.read_bytes()).public_key() == key.public_key()
    with pytest.raises(FileExistsError):
        write_new_key(path, algorithm)
    record = txt_record(SELECTOR, DOMAIN, key)
    name, _, strings = record.partition(". IN TXT ")
    assert name == f"{SELECTOR}._domainkey.{DOMAIN}"
    parts = strings.strip('"').split('" "')
    assert all(len(part) <= 255 for part in parts)
    assert parts[0].startswith(f"v=DKIM1; k={algorithm}; p=")
    signed = signer(key).sign(digest_like())
    assert dkim.verify(signed, dnsfunc=dns_with({name: "".join(parts)}))


@pytest.mark.parametrize("selector", ["", "a b", "-x", "x.", "a..b", "s\r\n", "x" * 64])
def test_selectors_must_be_dns_names(rsa_key: PrivateKey, selector: str) -> None:
    with pytest.raises(ValueError, match="DNS name"):
        DkimSigner(rsa_key, selector=selector, domain=DOMAIN)
