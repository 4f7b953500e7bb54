"""arXiv's Atom entries into PaperIn: ids without versions, categories, comment, journal ref.

Everything here reads a feedparser result and trusts none of it: each entry is validated
on its own, and an entry that fails gets a reason instead of stopping the page.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from pydantic import ValidationInfo, field_validator

from papermail.sources.base import PaperIn, clean_line

log = logging.getLogger(__name__)

MAX_COMMENT = 2_000
MAX_JOURNAL_REF = 1_000
MAX_CATEGORIES = 20

# The abstract page URL arXiv uses as an entry id: http://arxiv.org/abs/2506.01234v2
ENTRY_ID = re.compile(
    r"https?://(?:export\.)?arxiv\.org/abs/(?P<id>[^\s?#]+?)(?:v(?P<version>\d{1,3}))?"
)
CATEGORY = re.compile(r"[a-z]+(?:-[a-z]+)*(?:\.[A-Za-z]+(?:-[a-z]+)*)?")  # cs.CV, cond-mat.str-el


class ArxivPaperIn(PaperIn):
    """A PaperIn with what only arXiv says: categories (primary first), comment, journal ref."""

    categories: list[str] = []
    arxiv_comment: str | None = None
    journal_ref: str | None = None
    source: str = "arxiv"

    @field_validator("categories", mode="before")
    @classmethod
    def _categories(cls, value: object) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"must be a list, got {type(value).__name__}")
        codes: list[str] = []
        for raw in value:
            code = clean_line(raw) if isinstance(raw, str) else ""
            if len(code) <= 32 and CATEGORY.fullmatch(code) and code not in codes:
                codes.append(code)
        return codes[:MAX_CATEGORIES]

    @field_validator("arxiv_comment", "journal_ref", mode="before")
    @classmethod
    def _note(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            log.warning(
                "paper %s: dropping %s (not a string)", info.data.get("id"), info.field_name
            )
            return None
        text = clean_line(value)
        limit = MAX_COMMENT if info.field_name == "arxiv_comment" else MAX_JOURNAL_REF
        if len(text) > limit:
            log.warning(
                "paper %s: dropping %s (longer than %d characters)",
                info.data.get("id"),
                info.field_name,
                limit,
            )
            return None
        return text or None


def error_entry(feed: Any) -> str | None:
    # <entry><id>http://arxiv.org/api/errors#...</id><title>Error</title><summary>why
    entries = feed.get("entries") or []
    if len(entries) != 1 or clean_line(str(entries[0].get("title", ""))) != "Error":
        return None
    if ENTRY_ID.fullmatch(str(entries[0].get("id", "")).strip()):
        return None  # a real paper that happens to be titled "Error"
    return clean_line(str(entries[0].get("summary", "")))[:300] or "no detail"


def total_results(feed: Any) -> int | None:
    raw = str(feed.get("feed", {}).get("opensearch_totalresults", "")).strip()
    return int(raw) if raw.isdigit() else None


def published_at(entry: Any) -> dt.datetime:
    raw = entry.get("published")
    try:
        parsed = dt.datetime.fromisoformat(raw.strip()) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"published: missing or not an ISO 8601 timestamp: {show(raw)}")
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def paper_of(entry: Any) -> tuple[PaperIn, int]:
    raw_id = entry.get("id")
    match = ENTRY_ID.fullmatch(raw_id.strip()) if isinstance(raw_id, str) else None
    if match is None:
        raise ValueError(f"id: not an arXiv abstract URL: {show(raw_id)}")
    primary = entry.get("arxiv_primary_category") or {}
    terms = [primary.get("term")] + [tag.get("term") for tag in entry.get("tags") or []]
    paper = ArxivPaperIn.model_validate(
        {
            "id": match["id"],
            "title": entry.get("title"),
            "summary": entry.get("summary"),
            "authors": [a.get("name") for a in entry.get("authors") or []],
            "published_at": entry.get("published"),
            "categories": [t for t in terms if t],
            "arxiv_comment": entry.get("arxiv_comment"),
            "journal_ref": entry.get("arxiv_journal_ref"),
        }
    )
    return paper, int(match["version"] or 1)


def raw_id(entry: Any) -> str | None:
    raw = entry.get("id")
    if not isinstance(raw, str):
        return None
    match = ENTRY_ID.fullmatch(raw.strip())
    text = match["id"] if match else raw
    # Untrusted text headed for logs and reports: one short clean line.
    return clean_line(text[:200])[:80] or None


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
