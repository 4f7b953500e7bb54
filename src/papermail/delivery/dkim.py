"""DKIM signing (RFC 6376, RFC 8463): a DKIM-Signature on every message papermail sends.

dkimpy does the DKIM part: parsing the headers, relaxed canonicalization, choosing and
hashing the signed headers, folding the DKIM-Signature field. Two things are done around
it, because dkimpy alone costs ~9.5 ms a 78 KB digest (docs/operations.md, "DKIM"):

* the private-key operation goes to OpenSSL (``cryptography``): dkimpy's RSA is pure
  Python, 7 ms a signature against 0.25 ms;
* the body is canonicalized by dkimpy's own steps minus the two that provably do
  nothing to a body with no tab and no space before a line break (digests indent with
  spaces, never tabs); any other body, or a message with a bare LF, takes dkimpy's full
  path. dkimpy's ``sign`` gives the same bytes (tests/unit/delivery/test_dkim.py).

Keys are PEM (PKCS#8 or PKCS#1; ``papermail dkim keygen`` writes PKCS#8), or an Ed25519
seed in base64 as dkimpy's ``dknewkey`` writes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import dkim
import numpy as np
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa, utils
from dkim.canonicalization import (
    CanonicalizationPolicy,
    Relaxed,
    correct_empty_body,
    strip_trailing_lines,
)

Algorithm = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# Every one of these that a message has is signed, and signed once more than it occurs
# ("oversigned"), so nobody can add a second one without breaking the signature. Gmail's
# one-click unsubscribe needs List-Unsubscribe and List-Unsubscribe-Post signed.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-archive",
    "mime-version",
    "content-type",
)
RSA_BITS = 2048  # what keygen makes
MIN_RSA_BITS = 1024  # RFC 8301: verifiers ignore signatures with shorter keys
_CANONICALIZATION = b"relaxed/relaxed"
_HEADER_NAME = b"DKIM-Signature"
# A DNS name: labels of letters, digits and inner hyphens (underscores too, as in
# subdomain selectors some providers hand out), at most 63 characters each.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SPACE_RUNS = re.compile(rb"  +")


class DkimKeyError(ValueError):
    """A private key DKIM cannot sign with; the message says why, as "is ..." ."""


class DkimError(ValueError):
    """A message that cannot be signed (no From header, unparsable header section)."""


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


# --- signing ----------------------------------------------------------------------------


class DkimSigner:
    """Signs messages for one selector and domain; build it once a process, use it for all.

    ``sign(message)`` returns the message with a DKIM-Signature field prepended:
    relaxed/relaxed, SHA-256, the headers of ``SIGNED_HEADERS`` that the message has
    (each oversigned), ``t=`` from ``clock``.
    """

    def __init__(
        self,
        key: PrivateKey,
        *,
        selector: str,
        domain: str,
        headers: Sequence[str] = SIGNED_HEADERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if "from" not in (h.lower() for h in headers):
            raise ValueError("DKIM requires the From header to be signed")
        self.key = key
        self.algorithm: Algorithm = algorithm_of(key)
        self.selector = check_dns_name(selector, "the selector")
        self.domain = check_dns_name(domain, "the signing domain").lower()
        self._a = b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"
        self._s = self.selector.encode("ascii")
        self._d = self.domain.encode("ascii")
        self._names = tuple(dict.fromkeys(h.lower().encode("ascii") for h in headers))
        self._name_set = frozenset(self._names)
        self._policy = CanonicalizationPolicy.from_c_value(_CANONICALIZATION)
        self._clock = clock

    def sign(self, message: bytes) -> bytes:
        """``message`` (RFC 5322, CRLF line ends) with its DKIM-Signature field first."""
        return self.signature(message) + message

    __call__ = sign  # a signer is what sending takes: Callable[[bytes], bytes]

    def signature(self, message: bytes) -> bytes:
        """The DKIM-Signature field for ``message``, folded and CRLF-terminated."""
        headers, body = _parse(message)
        include = self._include(headers)
        signed = [field for field in headers if field[0].lower() in self._name_set]
        fields = [
            (b"v", b"1"),
            (b"a", self._a),
            (b"c", _CANONICALIZATION),
            (b"d", self._d),
            (b"i", b"@" + self._d),
            (b"q", b"dns/txt"),
            (b"s", self._s),
            (b"t", str(int(self._clock())).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(hashlib.sha256(body).digest())),
            # A placeholder as long as a signature's first line: dkimpy folds b= onto a
            # line of its own, so adding the signature refolds nothing before it.
            (b"b", b"0" * 60),
        ]
        # As dkimpy's DomainSigner.gen_header, with the key operation in OpenSSL.
        unsigned = dkim.fold(_join(fields), namelen=len(_HEADER_NAME), linesep=b"\r\n")
        unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
        hasher = hashlib.sha256()
        dkim.hash_headers(
            hasher,
            self._policy,
            self._policy.canonicalize_headers(signed),  # only these are hashed
            include,
            (_HEADER_NAME, b" " + unsigned),
            dict(fields),
        )
        fields[-1] = (b"b", base64.b64encode(self._sign_digest(hasher.digest())))
        value = dkim.fold(_join(fields) + b"\r\n", namelen=len(_HEADER_NAME), linesep=b"\r\n")
        return _HEADER_NAME + b": " + value

    def _include(self, headers: list[list[bytes]]) -> list[bytes]:
        counts: dict[bytes, int] = {}
        for name, _value in headers:
            lower = name.lower()
            counts[lower] = counts.get(lower, 0) + 1
        if not counts.get(b"from"):
            raise DkimError("a message without a From header cannot be DKIM-signed")
        return [name for name in self._names for _ in range(counts.get(name, 0) + 1)]

    def _sign_digest(self, digest: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return self.key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 of the headers


def _join(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(field) for field in fields)


def _parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's header fields and relaxed-canonical body of ``message``.

    The fast path needs every LF to end a CRLF (then the first CRLF CRLF is where dkimpy's
    parser ends the headers, and its LF-to-CRLF rewrite changes nothing), and a body with
    no tab and no space before a CRLF (then dkimpy's "strip trailing whitespace" does
    nothing and its "compress whitespace" is "compress runs of spaces"). Anything else
    goes through dkimpy whole.
    """
    end = message.find(b"\r\n\r\n")
    if end > 0 and b"\t" not in message[end:] and _plain_lines(message, body_start=end + 4):
        headers, _ = _parse_headers(message[: end + 2])
        body = _SPACE_RUNS.sub(b" ", message[end + 4 :])
        return headers, correct_empty_body(strip_trailing_lines(body))
    headers, body = _parse_headers(message)
    return headers, Relaxed.canonicalize_body(body)


def _plain_lines(message: bytes, *, body_start: int) -> bool:
    """Every LF comes right after a CR, and no body line ends in a space before its CRLF.

    numpy, because the two scans it replaces (``count(b"\\n") == count(b"\\r\\n")``,
    ``b" \\r\\n" in body``) cost ~150 us on a 70 KB digest, a quarter of signing it.
    """
    octets = np.frombuffer(message, dtype=np.uint8)
    lf = np.flatnonzero(octets == 0x0A)
    if not lf.size or lf[0] == 0 or not (octets[lf - 1] == 0x0D).all():
        return False
    in_body = lf[lf >= body_start + 2]  # a body line's LF, with room for "x\\r" before it
    return not (octets[in_body - 2] == 0x20).any()


def _parse_headers(message: bytes) -> tuple[list[list[bytes]], bytes]:
    try:
        headers, body = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError) as error:
        raise DkimError(f"cannot parse the message's headers: {error}") from None
    return headers, body


# --- keys and DNS -------------------------------------------------------------------------


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
