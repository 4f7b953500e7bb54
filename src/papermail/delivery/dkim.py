"""DKIM signing (RFC 6376, RFC 8463): a DKIM-Signature on every message papermail sends.

The bytes are dkimpy's: its ``sign`` gives the same field for every message
(tests/unit/delivery/test_dkim.py), but dkimpy alone costs ~9.5 ms a 78 KB digest
(docs/operations.md, "DKIM"), so only its parser and body canonicalization are called,
and only for messages off the fast path:

* the key operation goes to OpenSSL (``cryptography``), not dkimpy's pure Python (7 ms);
* a message whose lines all end in CRLF, with no tab and no space before a line break in
  its body (digests indent with spaces, never tabs), is parsed with one regex and its
  body canonicalized with numpy; any other takes dkimpy's full path;
* the signed headers are canonicalized and hashed directly, and the DKIM-Signature field
  is built and folded by a port of dkimpy's ``fold``, not by its generic helpers.

Keys: dkim_keys.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Sequence

import dkim
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import Relaxed, correct_empty_body, strip_trailing_lines

from papermail.delivery.dkim_keys import Algorithm, PrivateKey, algorithm_of, check_dns_name

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
_HEADER_NAME = b"DKIM-Signature"


class DkimError(ValueError):
    """A message that cannot be signed (no From header, unparsable header section)."""


# --- signing ----------------------------------------------------------------------------

_FOLD_AT = 72  # dkimpy's fold: a line is cut at its last space within 72 columns
_PLACEHOLDER = b"0" * 60  # what dkimpy's b= holds while it folds the field it hashes
# A header field name (RFC 5322: printable ASCII but ":"), here also without ";" and "=",
# which would end a tag or fake a b= tag inside h= (and break the shortcuts below).
_SIGNABLE_NAME = re.compile(r"[\x21-\x39\x3c\x3e-\x7e]+")
# One header field as dkimpy's parser reads it when every LF ends a CRLF: a name, a colon,
# the rest of the line and any continuation lines (those starting with a tab or a space).
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+):([^\n]*\n(?:[\t ][^\n]*\n)*)")
_WSP_RUNS = re.compile(rb"[\t ]+")
_LF, _CR, _SP = 0x0A, 0x0D, 0x20

_Fields = list[tuple[bytes, bytes]]  # (name, raw value with its CRLFs), in message order


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
        names = [h.lower() for h in headers]
        if "from" not in names:
            raise ValueError("DKIM requires the From header to be signed")
        for name in names:
            if not _SIGNABLE_NAME.fullmatch(name):
                raise ValueError(f"cannot sign a header named {name!r}")
        self.key = key
        self.algorithm: Algorithm = algorithm_of(key)
        self.selector = check_dns_name(selector, "the selector")
        self.domain = check_dns_name(domain, "the signing domain").lower()
        a = "rsa-sha256" if self.algorithm == "rsa" else "ed25519-sha256"
        # The tags before t= are the same in every signature (dkimpy's order and spelling).
        self._tags_before_t = (
            f"v=1; a={a}; c=relaxed/relaxed; d={self.domain}; i=@{self.domain}; "
            f"q=dns/txt; s={self.selector}; t="
        ).encode("ascii")
        self._names = tuple(dict.fromkeys(name.encode("ascii") for name in names))
        self._name_set = frozenset(self._names)
        self._clock = clock
        # When every word of the tags (t=, bh= and b= are short) is shorter than a folded
        # line (71 columns), dkimpy's fold only turns spaces into CRLF SP, which relaxed
        # canonicalization turns back: the value it hashes is then the tags themselves.
        words = [*self._tags_before_t.split(b" "), *(b"h=" + n + b";" for n in self._names)]
        self._folds_at_spaces = max(map(len, words)) <= _FOLD_AT - 2

    def sign(self, message: bytes) -> bytes:
        """``message`` (RFC 5322, CRLF line ends) with its DKIM-Signature field first."""
        return self.signature(message) + message

    __call__ = sign  # a signer is what sending takes: Callable[[bytes], bytes]

    def signature(self, message: bytes) -> bytes:
        """The DKIM-Signature field for ``message``, folded and CRLF-terminated.

        dkimpy's ``sign`` (DomainSigner.sign, gen_header) byte for byte, with the key
        operation in OpenSSL and its generic steps cut down to what these tags need.
        """
        fields, body = _parse(message)
        include, signed_fields = self._select(fields)
        tags = b"%b%d; h=%b; bh=%b; b=" % (
            self._tags_before_t,
            int(self._clock()),
            b" : ".join(include),
            base64.b64encode(hashlib.sha256(body).digest()),
        )
        hasher = hashlib.sha256(signed_fields)
        hasher.update(b"dkim-signature:")
        hasher.update(tags if self._folds_at_spaces else _relaxed_unsigned(tags))
        signature = self._sign_digest(hasher.digest())
        lines = _fold(tags + base64.b64encode(signature) + b"\r\n")
        return _HEADER_NAME + b": " + b"\r\n ".join(lines)

    def _select(self, fields: _Fields) -> tuple[list[bytes], bytes]:
        """The h= names, and the signed fields in relaxed form as they are hashed.

        As dkimpy: each name once per field plus once more (oversigned), and a name's
        fields hashed last one first (RFC 6376 5.4.2).
        """
        found: dict[bytes, list[bytes]] = {}
        for name, value in fields:
            lower = name.lower()
            if lower in self._name_set:
                found.setdefault(lower, []).append(value)
        if b"from" not in found:
            raise DkimError("a message without a From header cannot be DKIM-signed")
        include: list[bytes] = []
        lines: list[bytes] = []
        for name in self._names:
            values = found.get(name, ())
            include += [name] * (len(values) + 1)
            for value in reversed(values):  # unfolded (a value has no LF but in CRLF), stripped
                lines.append(b"%b:%b\r\n" % (name, value.replace(b"\r\n", b"").strip()))
        return include, _compress_whitespace(b"".join(lines))

    def _sign_digest(self, digest: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return self.key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 of the headers


def _compress_whitespace(lines: bytes) -> bytes:
    """Runs of tabs and spaces made one space, the last step of the relaxed form (RFC 6376
    3.4.2; stripping before it changes nothing): once for all lines and only if needed,
    because ``re.sub`` costs ~0.4 us a match."""
    if b"\t" in lines or b"  " in lines:
        return _WSP_RUNS.sub(b" ", lines)
    return lines


def _relaxed_unsigned(tags: bytes) -> bytes:
    """The relaxed form of the value dkimpy hashes: ``tags`` and the placeholder folded,
    the placeholder (a line's last word, as the fold leaves it) taken out by its RE_BTAG.

    Unfolding keeps the SP that starts each line: where it replaced a space nothing has
    changed; where the fold cut a word, the SP stays in what is hashed.
    """
    unfolded = b" ".join(_fold(tags + _PLACEHOLDER))
    return _WSP_RUNS.sub(b" ", unfolded[: -len(_PLACEHOLDER)]).strip()


def _fold(text: bytes) -> list[bytes]:
    """The lines of dkimpy's ``fold(text, namelen=len("DKIM-Signature"))``, which joins
    them with CRLF SP.

    A line ends at the last space within 72 columns (the first line shares them with the
    field name, later ones with the SP that starts them), and that space is dropped; a
    line with no space there is cut at the limit. ``text`` holds no CRLF SP (dkimpy would
    keep everything before one as it is); papermail's tags never do.
    """
    width = _FOLD_AT - len(_HEADER_NAME)
    if len(text) <= width or (text.endswith(b"\r\n") and len(text) <= width + 2):
        return [text]
    lines: list[bytes] = []
    start = 0
    while len(text) - start > width:
        space = text.rfind(b" ", start, start + width)
        if space < 0:
            lines.append(text[start : start + width])
            start += width
        else:
            lines.append(text[start:space])
            start = space + 1
        width = _FOLD_AT - 1
    lines.append(text[start:])
    return lines


def _parse(message: bytes) -> tuple[_Fields, bytes]:
    """The header fields and the relaxed-canonical body of ``message``, as dkimpy's: on
    the fast path if ``_plain_body`` takes it, else with dkimpy's parser and steps whole."""
    end = message.find(b"\r\n\r\n")
    body = _plain_body(message, end + 4) if end > 0 else None
    if body is None:
        fields, raw = _dkimpy_parse(message)
        return fields, Relaxed.canonicalize_body(raw)
    return _header_fields(message, end + 2), body


def _plain_body(message: bytes, start: int) -> bytes | None:
    """The relaxed-canonical body ``message[start:]``, or None if dkimpy must make it.

    With every LF ending a CRLF, the first CRLF CRLF is where dkimpy's parser ends the
    headers and its LF-to-CRLF rewrite changes nothing; with no tab and no space before
    a CRLF in the body, relaxed canonicalization is "make runs of spaces one space" (and
    the trailing-empty-lines rule). numpy, because a scan with bytes or re methods costs
    about what hashing the body does (~40 us for 55 KB).
    """
    if message.find(b"\t", start) >= 0:
        return None
    octets = np.frombuffer(message, dtype=np.uint8)
    lf = np.flatnonzero(octets == _LF)
    if lf[0] == 0 or (octets[lf - 1] != _CR).any():  # an LF with no CR before it
        return None
    if (octets[lf[lf >= start + 2] - 2] == _SP).any():  # a space before a body line's CRLF
        return None
    return correct_empty_body(strip_trailing_lines(_squeeze_spaces(octets[start:])))


def _squeeze_spaces(text: npt.NDArray[np.uint8]) -> bytes:
    """``text`` with each run of spaces made one space: ``re.sub(b"  +", b" ", text)`` at
    half the cost (re tries a match at every space)."""
    other = text != _SP
    keep = np.ones_like(other)  # all but a space right after a space
    np.logical_or(other[1:], other[:-1], out=keep[1:])
    return text[keep].tobytes()


def _header_fields(message: bytes, end: int) -> _Fields:
    """dkimpy's header fields of ``message[:end]``, a header section of CRLF lines: one
    regex pass if its fields cover it all, else (an mbox "From " line, ...) dkimpy's."""
    fields: _Fields = _FIELD.findall(message, 0, end)
    if sum(len(name) + 1 + len(value) for name, value in fields) == end:
        return fields
    return _dkimpy_parse(message[:end])[0]


def _dkimpy_parse(message: bytes) -> tuple[_Fields, bytes]:
    try:
        headers, body = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError) as error:
        raise DkimError(f"cannot parse the message's headers: {error}") from None
    return [(name, value) for name, value in headers], body
