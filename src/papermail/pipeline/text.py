"""Text for emails and pages: shortened, one-line, wrapped, counted; also template filters.

Everything here takes untrusted text (titles, abstracts, names from the upstream API) and
returns plain text; escaping is the templates' job (autoescape).
"""

from __future__ import annotations

import textwrap
import unicodedata
from urllib.parse import urlsplit

SUBJECT_MAX = 200
AUTHORS_SHOWN = 3


def squash(text: str) -> str:
    """Collapse all whitespace (newlines from arXiv titles included) to single spaces."""
    return " ".join(text.split())


def shorten(text: str, *, limit: int) -> str:
    """Whitespace-collapsed text cut at a word boundary: at most ``limit`` chars, '…' included."""
    text = squash(text)
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if text[limit - 1] != " " and " " in head:
        head = head.rsplit(" ", 1)[0]  # drop the partial word
    return head.rstrip(" ,;:.-–—") + "…"


def authors_line(authors: list[str]) -> str:
    names = [squash(str(name)) for name in authors if str(name).strip()]
    line = ", ".join(names[:AUTHORS_SHOWN])
    return f"{line} et al." if len(names) > AUTHORS_SHOWN else line


def one_line(text: str, *, limit: int = SUBJECT_MAX) -> str:
    """Header-safe: no CR/LF or other control characters can survive, and bounded length."""
    text = "".join(ch for ch in squash(text) if unicodedata.category(ch) != "Cc")
    return shorten(text, limit=limit)


def http_url(value: str | None) -> str:
    """The URL if it is absolute http(s), else "" so templates render no link at all."""
    value = (value or "").strip()
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in value):
        return ""
    parts = urlsplit(value)
    return value if parts.scheme.lower() in ("http", "https") and parts.netloc else ""


def compact(number: int) -> str:
    """1234 -> '1.2k', the way people read star and vote counts."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if abs(number) >= size:
            return f"{number / size:.1f}".removesuffix(".0") + suffix
    return str(number)


def counted(number: int, noun: str) -> str:
    return f"{compact(number)} {noun}{'' if number == 1 else 's'}"


def wrap(text: str, width: int = 72, indent: str = "", first: str | None = None) -> str:
    # URLs are never broken: a split URL is a dead link in every text client.
    return textwrap.fill(
        squash(text),
        width=width,
        break_long_words=False,
        break_on_hyphens=False,
        subsequent_indent=indent,
        initial_indent=indent if first is None else first,
    )
