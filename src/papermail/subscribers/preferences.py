"""What a subscriber chooses, and the one place those choices are checked.

The web forms, the CLI and the demo all build a :class:`Preferences`; every rule
about the values (ranges, choices, time zones, how many terms) lives on it. What
it refuses, :func:`field_errors` puts in words a person can act on, one sentence
per field: the forms show each next to its field, the CLI prints one line each
(:func:`error_lines`). So both refuse the same things in the same words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from papermail.models import Frequency, MailFormat, Subscriber

MIN_PAPERS, MAX_PAPERS = 1, 30
MAX_TERMS = 20  # per list: topics, organisations, authors
MAX_TERM_LENGTH = 80
ZONES = frozenset(available_timezones())
_TERM_SPLIT = re.compile(r"[,\n;]+")

# What a person is told when a field is refused, whatever the exact reason.
MESSAGES = {
    "frequency": "Choose daily or weekly.",
    "max_papers": f"Choose a number of papers from {MIN_PAPERS} to {MAX_PAPERS}.",
    "format": "Choose HTML or plain text.",
    "timezone": "Unknown time zone. Use a name like Europe/Paris, America/New_York or UTC.",
    "send_hour": "Choose an hour from 0 to 23.",
}
TERM_NOUNS = {
    "topics": "topics",
    "follow_organizations": "organisations",
    "follow_authors": "authors",
}


def split_terms(raw: str | list[str] | None) -> list[str]:
    """Free keywords from a form field or CLI option: comma/semicolon/newline separated."""
    if raw is None:
        return []
    parts = (
        _TERM_SPLIT.split(raw)
        if isinstance(raw, str)
        else [p for r in raw for p in _TERM_SPLIT.split(r)]
    )
    seen: dict[str, str] = {}
    for part in parts:
        term = " ".join(part.split())
        if term and term.casefold() not in seen:
            seen[term.casefold()] = term
    return list(seen.values())


Term = Annotated[str, Field(min_length=1, max_length=MAX_TERM_LENGTH)]


class Preferences(BaseModel):
    """Everything a subscriber can choose; defaults are what a new subscriber gets."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    frequency: Frequency = Frequency.DAILY
    max_papers: int = Field(default=10, ge=MIN_PAPERS, le=MAX_PAPERS)
    topics: list[Term] = Field(default_factory=list, max_length=MAX_TERMS)
    follow_organizations: list[Term] = Field(default_factory=list, max_length=MAX_TERMS)
    follow_authors: list[Term] = Field(default_factory=list, max_length=MAX_TERMS)
    format: MailFormat = MailFormat.HTML
    timezone: str = "UTC"
    send_hour: int = Field(default=7, ge=0, le=23)

    @field_validator("topics", "follow_organizations", "follow_authors", mode="before")
    @classmethod
    def _terms(cls, value: object) -> object:
        return split_terms(value) if isinstance(value, str | list) else value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value not in ZONES:
            raise ValueError(MESSAGES["timezone"])
        return value

    @classmethod
    def of(cls, subscriber: Subscriber) -> Preferences:
        return cls(
            frequency=subscriber.frequency,
            max_papers=subscriber.max_papers,
            topics=list(subscriber.topics or []),
            follow_organizations=list(subscriber.follow_organizations or []),
            follow_authors=list(subscriber.follow_authors or []),
            format=subscriber.format,
            timezone=subscriber.timezone,
            send_hour=subscriber.send_hour,
        )


def field_errors(error: ValidationError) -> dict[str, str]:
    """{field: sentence} for each field Preferences refused: what a form shows by each field.

    One sentence per field; a list's own problem (too many terms) comes before
    its items' (one term too long).
    """
    found: dict[str, str] = {}
    for problem in sorted(error.errors(), key=lambda p: len(p["loc"])):
        name = str(problem["loc"][0]) if problem["loc"] else "form"
        found.setdefault(name, _sentence(name, problem))
    return found


def error_lines(error: ValidationError, *, labels: Mapping[str, str] | None = None) -> list[str]:
    """One ``field: sentence`` line per refused field, for a terminal.

    ``labels`` names fields the way the caller's user knows them (e.g. CLI options).
    """
    labels = labels or {}
    return [f"{labels.get(name, name)}: {text}" for name, text in field_errors(error).items()]


def _sentence(name: str, problem: ErrorDetails) -> str:
    if name in MESSAGES:
        return MESSAGES[name]
    if name in TERM_NOUNS:
        noun = TERM_NOUNS[name]
        if problem["type"] == "too_long":
            return f"Use at most {MAX_TERMS} {noun}, separated by commas."
        if problem["type"] == "string_too_long":
            return f"Keep each of your {noun} under {MAX_TERM_LENGTH} characters."
    return str(problem["msg"]).removeprefix("Value error, ")
