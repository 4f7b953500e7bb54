"""DKIM keys: reading one (from settings), making one, and the DNS record that publishes it.

Keys are PEM (PKCS#8 or PKCS#1; ``papermail dkim keygen`` writes PKCS#8), or an Ed25519
seed in base64 as dkimpy's ``dknewkey`` writes it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

Algorithm = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

RSA_BITS = 2048  # what keygen makes
MIN_RSA_BITS = 1024  # RFC 8301: verifiers ignore signatures with shorter keys
# A DNS name: labels of letters, digits and inner hyphens (underscores too, as in
# subdomain selectors some providers hand out), at most 63 characters each.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class DkimKeyError(ValueError):
    """A private key DKIM cannot sign with; the message says why, as "is ..." ."""


def load_private_key(data: bytes) -> PrivateKey:
    """An RSA (>= 1024 bits) or Ed25519 private key from PEM or a base64 Ed25519 seed."""
    text = data.strip()
    if not text:
        raise DkimKeyError("is empty")
    if not text.startswith(b"-----BEGIN"):
        return _ed25519_seed(text)
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:
        raise DkimKeyError("is encrypted with a passphrase; DKIM needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise DkimKeyError("is not a PEM private key papermail can read") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DkimKeyError(
                f"is a {key.key_size}-bit RSA key; DKIM needs at least {MIN_RSA_BITS} bits "
                f"({RSA_BITS} recommended)"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise DkimKeyError(f"is {_describe(key)}; DKIM signs with RSA or Ed25519 keys only")


def _ed25519_seed(text: bytes) -> ed25519.Ed25519PrivateKey:
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise DkimKeyError("is neither a PEM private key nor a base64 Ed25519 seed (32 bytes)")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC ({key.curve.name}) key"
    if isinstance(key, dsa.DSAPrivateKey):
        return "a DSA key"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "an Ed448 key"
    return f"a {type(key).__name__} key"


def algorithm_of(key: PrivateKey) -> Algorithm:
    return "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ed25519"


def check_dns_name(value: str, what: str) -> str:
    """``value`` if it is a DNS name (a selector, a domain); ValueError otherwise."""
    if len(value) > 253 or not _DNS_NAME.fullmatch(value):
        raise ValueError(f"{what} must be a DNS name like mail2026 or example.org, got {value!r}")
    return value


def generate_private_key(algorithm: Algorithm = "rsa") -> PrivateKey:
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ed25519.Ed25519PrivateKey.generate()


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_new_key(path: Path, algorithm: Algorithm = "rsa") -> PrivateKey:
    """Generate a key and write it to ``path`` (mode 0600). FileExistsError if it exists."""
    key = generate_private_key(algorithm)
    pem = private_key_pem(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
    finally:
        os.close(fd)
    return key


def dns_record_value(key: PrivateKey) -> str:
    """The TXT record's text: ``v=DKIM1; k=rsa; p=<base64 public key>``."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"


def dns_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def txt_record(selector: str, domain: str, key: PrivateKey) -> str:
    """The record as a zone file line; the text is cut into the 255-character strings
    DNS requires (resolvers join them: ``"v=DKIM1; k=rsa; p=MIIB..." "...IDAQAB"``)."""
    value = dns_record_value(key)
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{dns_record_name(selector, domain)}. IN TXT {strings}"


def configured_key(
    *,
    key_path: Path | None,
    inline: str | None,
    selector: str | None,
    domain: str,
    domain_setting: str,
    algorithm: Algorithm | None,
) -> PrivateKey:
    """The key the PAPERMAIL_DKIM_* settings name, read and checked: ValueError says which
    setting is wrong and how (Settings reports it as the one line an operator reads)."""
    if key_path is not None and inline is not None:
        raise ValueError(
            "set PAPERMAIL_DKIM_PRIVATE_KEY_PATH or PAPERMAIL_DKIM_PRIVATE_KEY, not both"
        )
    if not selector:
        raise ValueError(
            "PAPERMAIL_DKIM_SELECTOR is not set: a DKIM key needs the selector its public "
            "key is published under (SELECTOR._domainkey.DOMAIN)"
        )
    check_dns_name(selector, "PAPERMAIL_DKIM_SELECTOR")
    check_dns_name(domain, domain_setting)
    where = "PAPERMAIL_DKIM_PRIVATE_KEY"
    try:
        if key_path is not None:
            where = f"PAPERMAIL_DKIM_PRIVATE_KEY_PATH ({key_path})"
            data = key_path.read_bytes()
        else:  # an environment variable may carry the PEM's line breaks as "\n"
            data = (inline or "").replace("\\n", "\n").encode()
        key = load_private_key(data)
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except (DkimKeyError, UnicodeError) as exc:
        raise ValueError(f"{where} {exc}") from None
    if algorithm and algorithm != algorithm_of(key):
        raise ValueError(
            f"PAPERMAIL_DKIM_ALGORITHM is {algorithm} but {where} is an "
            f"{'RSA' if algorithm_of(key) == 'rsa' else 'Ed25519'} key"
        )
    return key
