"""What every paper source returns, and the rules a paper must pass to be kept.

PaperIn is the edge of trust: after it, text is clean, sizes are bounded, URLs are
absolute http(s) and datetimes UTC. A bad required field rejects the paper; a bad
optional field becomes None (and is logged), since a broken project link is no reason
to drop a trending paper. Markup stays as written (``<b>Is</b>``): escaping is the
renderer's job, and stripping tags here would change what the authors wrote.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

log = logging.getLogger(__name__)

MAX_TITLE = 1_000
MAX_SUMMARY = 20_000
MAX_AI_SUMMARY = 5_000
MAX_AUTHORS = 1_000  # stored; longer lists are cut (collaboration papers run to thousands)
MAX_AUTHOR_ENTRIES = 5_000  # more than this in one item is garbage, not a paper
MAX_AUTHOR_NAME = 300
MAX_KEYWORDS = 50
MAX_KEYWORD = 100
MAX_ORGANIZATION = 256  # papers.organization is String(256)
MAX_URL = 512  # papers.*_url columns are String(512)
MAX_COUNT = 2_000_000_000  # PostgreSQL INTEGER tops out at 2**31 - 1

# New style 2602.23229 / 2602.23229v2, old style hep-th/9901001 / math.GT/0309136v1.
ARXIV_ID = re.compile(r"(?:\d{4}\.\d{4,5}|[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/\d{7})(?:v\d{1,3})?")
# C0 controls except \t and \n, DEL, and lone surrogates (JSON "\ud800" decodes to one,
# and neither SQLite nor PostgreSQL will store it).
_UNWANTED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


class SourceError(Exception):
    """The whole fetch failed; the message says which URL and what went wrong."""


class SourceUnreachable(SourceError):
    """Network-level failure (DNS, connect, timeout) that outlasted the retries."""


@dataclass(frozen=True)
class RejectedItem:
    index: int  # position of the item in the fetched stream, counted across pages
    paper_id: str | None
    reason: str


def clean_text(value: str) -> str:
    """Normalise newlines, drop control characters, trim the ends."""
    return _UNWANTED.sub("", value.replace("\r\n", "\n").replace("\r", "\n")).strip()


def clean_line(value: str) -> str:
    """clean_text, then collapse every run of whitespace into one space (titles, names)."""
    return " ".join(clean_text(value).split())


def safe_url(value: object) -> str | None:
    """The URL if it is an absolute http(s) URL we are willing to put in an email, else None."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > MAX_URL or any(ch.isspace() or not ch.isprintable() for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return None
    # user:pass@ is how "https://arxiv.org@evil.example" disguises where a link goes.
    if parts.username is not None or parts.password is not None:
        return None
    return url


def as_int(value: object) -> int | None:
    """An integer from a JSON int, an integral float or a digit string; None otherwise."""
    if isinstance(value, bool):  # bool is an int subclass; true upvotes means a broken item
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,12}", value.strip()):
        return int(value.strip())
    return None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _paper_id(info: ValidationInfo) -> str:
    return str(info.data.get("id", "?"))


def _drop(info: ValidationInfo, value: object, why: str) -> None:
    _note(info, f"dropping {info.field_name}={_show(value)} ({why})")


def _note(info: ValidationInfo, message: str) -> None:
    log.warning("paper %s: %s", _paper_id(info), message)


def _parse_datetime(value: object) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.strip()) if isinstance(value, str) else value
        if not isinstance(parsed, dt.datetime):
            return None
        # The API writes "...Z"; anything without a zone is taken as UTC.
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None


class PaperIn(BaseModel):
    """A validated, normalised paper, whatever source it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # id comes first so later validators can name the paper in their log lines.
    id: str
    title: str
    summary: str = ""
    authors: list[str] = []
    published_at: dt.datetime | None = None
    submitted_on_daily_at: dt.datetime | None = None
    upvotes: int = 0
    num_comments: int = 0
    github_repo: str | None = None
    github_stars: int | None = None
    project_page: str | None = None
    organization: str | None = None
    ai_summary: str | None = None
    ai_keywords: list[str] = []
    thumbnail: str | None = None
    source: str = "hf"

    # Required fields: a failure here rejects the paper.

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: object) -> str:
        if value is None:
            raise ValueError("is missing")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a non-blank string, got {_show(value)}")
        if not ARXIV_ID.fullmatch(value.strip()):
            raise ValueError(f"not an arXiv id: {_show(value)}")
        return value.strip()

    @field_validator("title", mode="before")
    @classmethod
    def _title(cls, value: object) -> str:
        if value is None:
            raise ValueError("is missing")
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {_show(value)}")
        title = clean_line(value)
        if not title:
            raise ValueError("is blank")
        if len(title) > MAX_TITLE:
            raise ValueError(f"is {len(title)} characters long (max {MAX_TITLE})")
        return title

    @field_validator("summary", mode="before")
    @classmethod
    def _summary(cls, value: object) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {_show(value)}")
        summary = clean_text(value)
        if len(summary) > MAX_SUMMARY:
            raise ValueError(f"is {len(summary)} characters long (max {MAX_SUMMARY})")
        return summary

    @field_validator("authors", mode="before")
    @classmethod
    def _authors(cls, value: object, info: ValidationInfo) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"must be a list, got {_show(value)}")
        if len(value) > MAX_AUTHOR_ENTRIES:
            raise ValueError(f"has {len(value)} entries (max {MAX_AUTHOR_ENTRIES})")
        names = [clean_line(v) for v in value if isinstance(v, str)]
        names = [n for n in names if 0 < len(n) <= MAX_AUTHOR_NAME]
        if len(names) != len(value):
            _note(info, f"skipped {len(value) - len(names)} author entries without a usable name")
        if len(names) > MAX_AUTHORS:
            _note(info, f"kept the first {MAX_AUTHORS} of {len(names)} authors")
        return names[:MAX_AUTHORS]

    @field_validator("upvotes", "num_comments", mode="before")
    @classmethod
    def _count(cls, value: object, info: ValidationInfo) -> int:
        if value is None:  # the API omits zero-ish counts
            return 0
        count = as_int(value)
        if count is None:
            raise ValueError(f"must be an integer, got {_show(value)}")
        if count > MAX_COUNT:
            raise ValueError(f"is implausibly large: {count}")
        if count < 0:
            # Clamp rather than reject: a bogus count should not cost us the paper.
            _drop(info, value, "negative count, stored as 0")
            return 0
        return count

    # Optional fields: a failure here drops the value, never the paper.

    @field_validator("published_at", "submitted_on_daily_at", mode="before")
    @classmethod
    def _datetime(cls, value: object, info: ValidationInfo) -> dt.datetime | None:
        if value is None:
            return None
        parsed = _parse_datetime(value)
        if parsed is None:
            _drop(info, value, "not an ISO 8601 timestamp")
        return parsed

    @field_validator("github_repo", "project_page", "thumbnail", mode="before")
    @classmethod
    def _url(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        url = safe_url(value)
        if url is None:
            _drop(info, value, f"not an absolute http(s) URL of at most {MAX_URL} characters")
        return url

    @field_validator("github_stars", mode="before")
    @classmethod
    def _stars(cls, value: object, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        count = as_int(value)
        if count is None or count > MAX_COUNT:
            _drop(info, value, "not a plausible integer")
            return None
        return max(count, 0)

    @field_validator("organization", "ai_summary", mode="before")
    @classmethod
    def _optional_text(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        limit = MAX_ORGANIZATION if info.field_name == "organization" else MAX_AI_SUMMARY
        if not isinstance(value, str):
            _drop(info, value, "not a string")
            return None
        text = clean_line(value) if info.field_name == "organization" else clean_text(value)
        if len(text) > limit:
            _drop(info, value, f"longer than {limit} characters")
            return None
        return text or None

    @field_validator("ai_keywords", mode="before")
    @classmethod
    def _keywords(cls, value: object, info: ValidationInfo) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            _drop(info, value, "not a list")
            return []
        keywords: list[str] = []
        for raw in value:
            word = clean_line(raw) if isinstance(raw, str) else ""
            if word and len(word) <= MAX_KEYWORD and word not in keywords:
                keywords.append(word)
            if len(keywords) == MAX_KEYWORDS:
                break
        return keywords

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: object) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9_-]{1,16}", value):
            raise ValueError(f"must be a short lowercase name, got {_show(value)}")
        return value


@dataclass(frozen=True)
class FetchResult:
    papers: list[PaperIn]
    rejected: list[RejectedItem]
    pages: int


def rejection_reason(exc: Exception) -> str:
    """Why an item was rejected, one line per failed field ("title: too long; ...")."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "item"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
