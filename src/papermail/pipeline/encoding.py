"""The hot path's encoding: digest messages made of pre-encoded bytes.

A digest's headers and body parts are encoded once (quoted-printable, CRLF); each reader's
message is then a join of pre-encoded bytes with the few personal values spliced in.
Every literal segment ends on a (soft) line break, so a spliced value always starts at
column 0 and no encoded line can grow past 76 characters. ``MessageTemplate`` is the
whole-message form of it, and the reference ``ReaderTemplate`` (encoded.py) matches;
headers follow messages.py's rules.
"""

from __future__ import annotations

import datetime as dt
import email.quoprimime
import html
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import cast

from papermail.pipeline.messages import CRLF, ascii_header_safe, fold_header

Segment = bytes | str  # bytes: pre-encoded literal; str: the name of a slot to fill
HTML_SLOT = "html:"


def _qp(text: str) -> str:
    # quoprimime works on code points < 256, so hand it UTF-8 bytes as latin-1.
    # 73, not 76: a soft break ("=") may be appended to a last line, and a leading
    # "." may become "=2E" (see _no_leading_dots).
    return email.quoprimime.body_encode(
        text.encode("utf-8").decode("latin-1"), maxlinelen=73, eol=CRLF
    )


def _no_leading_dots(encoded: str) -> str:
    """Write a line-leading "." as "=2E" (same decoded text).

    Then no line of a digest starts with a dot, and the SMTP backend can skip
    dot-stuffing (a copy of the whole message) on the hot path.
    """
    if not encoded.startswith(".") and "\n." not in encoded:
        return encoded
    return CRLF.join(
        "=2E" + line[1:] if line.startswith(".") else line for line in encoded.split(CRLF)
    )


def _encode_literal(text: str) -> bytes:
    encoded = _no_leading_dots(_qp(text))
    if not text.endswith("\n"):
        encoded += "=" + CRLF  # soft break: the next segment starts a fresh line
    return encoded.encode("ascii")


_QP_SAFE = re.compile(r"[!-<>-~]*")  # printable ASCII but "=": QP leaves it as it is
# What signed tokens are made of (base64url, digits, "."): nothing HTML or QP would alter.
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_.\-]*").fullmatch
# One encoded line as it is: QP-safe, at most 72 characters, not starting with a dot.
_ONE_SAFE_LINE = re.compile(r"[\x21-\x2d\x2f-\x3c\x3e-\x7e][\x21-\x3c\x3e-\x7e]{0,71}").fullmatch


def encode_value(value: str) -> bytes:
    # A value (a URL, a token, an address) is short; it becomes its own soft-broken line(s).
    if _ONE_SAFE_LINE(value):  # the usual case (a token, an address), with nothing to do
        return (value + "=" + CRLF).encode("ascii")
    if not value:
        return b""
    if _QP_SAFE.fullmatch(value):  # without quoprimime's per-char work
        lines = [value[i : i + 72] for i in range(0, len(value), 72)]
        encoded = ("=" + CRLF).join(lines)
    else:
        encoded = _qp(value)
    return (_no_leading_dots(encoded) + "=" + CRLF).encode("ascii")


def subject_header(subject: str) -> bytes:
    """The folded ``Subject:`` header line (RFC 2047 when it is not plain ASCII)."""
    return fold_header("Subject", subject).encode("ascii")


def encode_segments(segments: Sequence[str]) -> list[Segment]:
    """rendering's alternating segments as pre-encoded literals and slot names."""
    out: list[Segment] = []
    for index, segment in enumerate(segments):
        if index % 2:
            out.append(segment)  # slot name
        elif segment:
            out.append(_encode_literal(segment))
    return out


@dataclass(frozen=True, slots=True)
class Layout:
    """What every digest of one list and format shares: its fixed headers and MIME frame.

    Made once (per edition and format, in a sending process); ``template`` then wraps
    one reader's encoded parts and subject into a :class:`MessageTemplate`.
    """

    head: bytes  # the fixed headers, folded and CRLF-terminated (Subject comes per digest)
    boundary: str | None  # None: a single text/plain part

    @classmethod
    def make(
        cls,
        *,
        sender: str,
        list_id: str,
        reply_to: str | None = None,
        archive_url: str | None = None,
        multipart: bool = True,
    ) -> Layout:
        headers = [("From", sender), ("List-Id", list_id)]
        if reply_to:
            headers.append(("Reply-To", reply_to))
        if archive_url:
            headers.append(("List-Archive", f"<{ascii_header_safe(archive_url)}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        headers.append(("MIME-Version", "1.0"))
        boundary = None
        if multipart:
            boundary = f"==papermail_{secrets.token_hex(16)}=="
            headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
        # RFC 2047 for non-ASCII names, 78-column lines (see fold_header).
        head = "".join(fold_header(name, value) for name, value in headers)
        return cls(head=head.encode("ascii"), boundary=boundary)

    def frame(self) -> tuple[bytes, bytes, bytes]:
        """What comes before the text part's body, between it and the HTML part's body
        (b"" for a single part), and after the last part."""
        text_head = (
            f'Content-Type: text/plain; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}"
        ).encode("ascii")
        if self.boundary is None:
            # Single part: the part's own headers simply continue the message headers.
            return text_head, b"", b""
        delimiter = f"--{self.boundary}{CRLF}".encode("ascii")
        html_head = text_head.replace(b"text/plain", b"text/html", 1)
        return (
            CRLF.encode() + delimiter + text_head,
            CRLF.encode() + delimiter + html_head,
            f"{CRLF}--{self.boundary}--{CRLF}".encode("ascii"),
        )

    def template(
        self,
        *,
        subject: bytes,
        text_part: Sequence[Segment],
        html_part: Sequence[Segment] | None,
        feedback_slots: tuple[str, ...] = (),
        feedback_payloads: tuple[bytes, ...] = (),
    ) -> MessageTemplate:
        """One digest's template from its encoded parts (``encode_segments``' form) and
        its Subject header (``subject_header``)."""
        if (self.boundary is None) != (html_part is None):
            raise ValueError("an HTML part needs a multipart layout, and only it")
        before_text, before_html, after = self.frame()
        body: list[Segment] = [before_text, *text_part]
        if html_part is not None:
            # HTML slots are renamed so render() knows to HTML-escape their values.
            body += [
                before_html,
                *(s if isinstance(s, bytes) else HTML_SLOT + s for s in html_part),
            ]
        body.append(after)
        return MessageTemplate(
            head=subject + self.head,
            body=tuple(body),
            slots=frozenset(s for s in body if isinstance(s, str)),
            feedback_slots=feedback_slots,
            feedback_payloads=feedback_payloads,
        )


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A variant encoded once; ``render`` makes one subscriber's message in microseconds."""

    head: bytes  # constant headers, CRLF-terminated
    body: tuple[Segment, ...]  # the MIME body after the top-level headers
    slots: frozenset[str]  # slot names; "html:" ones sit in the text/html part
    # The cards' feedback-link slots and what their tokens sign after the subscriber id
    # (rendering.feedback_plan); the sender signs one token per slot for each message.
    feedback_slots: tuple[str, ...] = ()
    feedback_payloads: tuple[bytes, ...] = ()
    # What render() encodes: the text part's slots, then (html slot, value name) pairs.
    _plain: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _html: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    _positions: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = tuple(sorted(s for s in self.slots if not s.startswith(HTML_SLOT)))
        if len(self.feedback_slots) != len(self.feedback_payloads):
            raise ValueError("one feedback payload per feedback slot")
        if not set(self.feedback_slots) <= set(plain):
            raise ValueError("feedback slots missing from the text part")
        # A feedback slot holds a token, whose characters HTML leaves alone (render checks):
        # its HTML occurrence takes the text part's encoding, with no escaping per value.
        tokens = {HTML_SLOT + name: name for name in self.feedback_slots}
        html_pairs = tuple(
            sorted(
                (s, s[len(HTML_SLOT) :])
                for s in self.slots
                if s.startswith(HTML_SLOT) and s not in tokens
            )
        )
        positions = tuple(
            (i, tokens.get(s, s)) for i, s in enumerate(self.body) if isinstance(s, str)
        )
        object.__setattr__(self, "_plain", plain)
        object.__setattr__(self, "_html", html_pairs)
        object.__setattr__(self, "_positions", positions)

    @classmethod
    def compile(
        cls,
        *,
        sender: str,
        subject: str,
        text: tuple[str, ...],
        html_body: tuple[str, ...] | None,
        list_id: str,
        reply_to: str | None = None,
        archive_url: str | None = None,
        feedback_slots: tuple[str, ...] = (),
        feedback_payloads: tuple[bytes, ...] = (),
    ) -> MessageTemplate:
        layout = Layout.make(
            sender=sender,
            list_id=list_id,
            reply_to=reply_to,
            archive_url=archive_url,
            multipart=html_body is not None,
        )
        return layout.template(
            subject=subject_header(subject),
            text_part=encode_segments(text),
            html_part=None if html_body is None else encode_segments(html_body),
            feedback_slots=feedback_slots,
            feedback_payloads=feedback_payloads,
        )

    @property
    def size(self) -> int:
        """Bytes held, roughly (what a cache of templates should budget for)."""
        return len(self.head) + sum(len(s) for s in self.body)

    def render(
        self,
        *,
        to: str,
        message_id: str,
        date: dt.datetime,
        dates: DateHeaders,
        unsubscribe_url: str,
        values: Mapping[str, str],
    ) -> bytes:
        """One subscriber's message; ``dates`` formats its Date header (keep one per
        batch: it formats once a second)."""
        personal = personal_headers(
            to=to, message_id=message_id, date=date, dates=dates, unsubscribe_url=unsubscribe_url
        )
        check_tokens(values, self.feedback_slots)
        encoded = {name: encode_value(values[name]) for name in self._plain}
        for name, value_name in self._html:
            value = values[value_name]
            escaped = html_value(value)
            # A URL (the usual value) escapes to itself: encode it once for both parts.
            same = escaped == value and value_name in encoded
            encoded[name] = encoded[value_name] if same else encode_value(escaped)
        parts = list(self.body)
        for index, name in self._positions:
            parts[index] = encoded[name]
        return self.head + personal + b"".join(cast(list[bytes], parts))  # no slot name left


def personal_headers(
    *, to: str, message_id: str, date: dt.datetime, dates: DateHeaders, unsubscribe_url: str
) -> bytes:
    """The headers that differ per message, CRLF-terminated (each checked for CR/LF)."""
    return (
        f"To: {ascii_header_safe(to)}{CRLF}"
        f"Date: {dates.format(date)}{CRLF}"
        f"Message-ID: {ascii_header_safe(message_id)}{CRLF}"
        f"List-Unsubscribe: <{ascii_header_safe(unsubscribe_url)}>{CRLF}"
    ).encode("ascii")


def check_tokens(values: Mapping[str, str], slots: Sequence[str]) -> None:
    """Feedback slots hold signed tokens, which neither HTML nor QP alter: so their encoded
    text serves both parts, unescaped. Refuse anything else."""
    if slots and not _TOKEN_TEXT("".join([values[n] for n in slots])):
        raise ValueError("a feedback slot's value is not a token")


def html_value(value: str) -> str:
    """A per-message value as the HTML part carries it."""
    return html.escape(value, quote=True)


class DateHeaders:
    """``format_datetime(date)``, computed once per second and time zone.

    A batch sends ~1,000 messages a second and formatting a date (strftime, timetuple)
    was the largest cost left in ``render()``. A cache, so whoever renders owns one (a
    send batch does) rather than sharing it between threads.
    """

    __slots__ = ("_second", "_value", "_zone")

    def __init__(self) -> None:
        self._second = -1
        self._zone: dt.tzinfo | None = None
        self._value = ""

    def format(self, date: dt.datetime) -> str:
        second = int(date.timestamp())
        if self._second != second or self._zone is not date.tzinfo:
            self._second, self._zone, self._value = second, date.tzinfo, format_datetime(date)
        return self._value
