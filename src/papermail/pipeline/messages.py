"""RFC 5322 message assembly.

Two paths that must produce equally valid bytes:

* ``build_message`` uses the standard ``email`` package. One-off emails
  (confirmations) take it, and tests use it as the oracle.
* the hot path for digests (encoding.py, encoded.py) encodes headers and body parts
  once and joins pre-encoded bytes per reader.

Both share this module's header rules: no CR/LF/NUL in a value, RFC 2047 for non-ASCII,
long List-* URLs raw on one line.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

CRLF = "\r\n"


class HeaderInjection(ValueError):
    """A value bound for a header contained CR, LF or NUL."""


def header_safe(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise HeaderInjection(f"header value contains a line break: {value[:60]!r}")
    return value


def ascii_header_safe(value: str) -> str:
    header_safe(value)
    if not value.isascii():
        raise HeaderInjection(f"header value must be ASCII: {value[:60]!r}")
    return value


@dataclass(frozen=True, slots=True)
class ListHeaders:
    """RFC 2369 / 2919 / 8058 headers that make a digest a well-behaved list message."""

    list_id: str  # "papermail daily papers <daily.papermail.example.org>"
    unsubscribe_url: str  # https URL; POST with List-Unsubscribe=One-Click unsubscribes
    archive_url: str | None = None


def make_message_id(*, domain: str, edition_id: int, delivery_id: int) -> str:
    """Stable across retries: a receiver can drop a second copy by Message-ID."""
    return f"<papermail.e{edition_id}.d{delivery_id}@{domain}>"


def resend_message_id(previous: str) -> str:
    """A new Message-ID for an operator's resend: receivers drop a repeated one as a
    duplicate (that is the point of keeping it stable across retries)."""
    local, _, domain = previous.strip("<>").rpartition("@")
    return f"<{local.split('.r', 1)[0]}.r{secrets.token_hex(4)}@{domain}>"


def random_message_id(domain: str) -> str:
    return f"<papermail.{secrets.token_hex(12)}@{domain}>"


def list_id(name: str, domain: str, kind: str = "daily") -> str:
    return f"{header_safe(name)} <{kind}.{domain}>"


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html_body: str | None,
    message_id: str,
    date: dt.datetime,
    reply_to: str | None = None,
    list_headers: ListHeaders | None = None,
) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = header_safe(sender)
    msg["To"] = ascii_header_safe(to)
    if _encode_ourselves(subject):
        msg.set_raw("Subject", _rfc2047("Subject", subject))
    else:
        msg["Subject"] = header_safe(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = ascii_header_safe(message_id)
    if reply_to:
        msg["Reply-To"] = header_safe(reply_to)
    if list_headers:
        for name, value in _list_header_pairs(list_headers):
            # Raw: the policy would fold a long URL into RFC 2047 encoded words, which
            # no mailbox provider reads as a List-Unsubscribe URL.
            msg.set_raw(name, value)
    msg.set_content(text, charset="utf-8", cte="quoted-printable")
    if html_body is not None:
        msg.add_alternative(html_body, subtype="html", charset="utf-8", cte="quoted-printable")
    # refold_source="none" emits the raw headers above as they are; the others fold as usual.
    return msg.as_bytes(policy=SMTP.clone(refold_source="none"))


def _encode_ourselves(subject: str) -> bool:
    # The policy's folder, given a str, (1) decodes anything that looks like an RFC 2047
    # encoded word (a paper title can) and writes the result raw, CR/LF included, and
    # (2) on Python 3.11 drops spaces between the encoded words it makes of non-ASCII text.
    return "=?" in subject or not subject.isascii()


def _rfc2047(name: str, value: str) -> str:
    """``value`` wholly RFC 2047-encoded, folded with CRLF + space."""
    return Header(header_safe(value), "utf-8", header_name=name).encode(linesep=CRLF)


def fold_header(name: str, value: str) -> str:
    """``name: value`` as one folded, CRLF-terminated header line (RFC 2047 where needed)."""
    header_safe(value)
    if value.isascii() and "=?" not in value and len(name) + 2 + len(value) <= 78:
        return f"{name}: {value}{CRLF}"  # nothing to encode or fold: skip the policy's parser
    if name == "Subject" and _encode_ourselves(value):
        return f"{name}: {_rfc2047(name, value)}{CRLF}"
    return SMTP.fold(*SMTP.header_store_parse(name, header_safe(value)))


def _list_header_pairs(headers: ListHeaders) -> list[tuple[str, str]]:
    pairs = [
        ("List-Id", header_safe(headers.list_id)),
        ("List-Unsubscribe", f"<{ascii_header_safe(headers.unsubscribe_url)}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    if headers.archive_url:
        pairs.append(("List-Archive", f"<{ascii_header_safe(headers.archive_url)}>"))
    return pairs
