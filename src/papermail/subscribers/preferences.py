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
from dataclasses import dataclass
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from papermail.models import Frequency, MailFormat, Subscriber
from papermail.pipeline.relevance import DEFAULT_WEIGHT
from papermail.sources.arxiv_taxonomy import CATEGORIES, category_name, unknown_categories

MIN_PAPERS, MAX_PAPERS = 1, 30
MAX_TERMS = 20  # per list: topics, organisations, authors
MAX_TERM_LENGTH = 80
MAX_CATEGORIES = 20
ZONES = frozenset(available_timezones())
_TERM_SPLIT = re.compile(r"[,\n;]+")
_CODE_SPLIT = re.compile(r"[\s,;]+")
UNKNOWN_SHOWN = 5  # unknown category codes named in a refusal; the rest are counted
CODE_SHOWN = 24  # characters of each: a code is ~8, whatever was typed may be anything


@dataclass(frozen=True, slots=True)
class Blend:
    """One step of "trending vs. for me": how forms and the CLI name a relevance weight."""

    slug: str  # the form's value and the CLI's --blend choice
    weight: float  # pipeline/relevance.py's ReaderProfile.weight
    label: str


# The only weights a reader can choose. 0 is the trending list everyone gets, 1 only what
# is picked for them; the default must be one of them (a test checks).
BLENDS = (
    Blend("trending", 0.0, "Trending"),
    Blend("mostly-trending", 0.25, "Mostly trending"),
    Blend("balanced", 0.5, "Balanced"),
    Blend("mostly-for-me", 0.75, "Mostly for me"),
    Blend("for-me", 1.0, "For me"),
)
_BLEND_BY_SLUG = {blend.slug: blend for blend in BLENDS}
_TABLE_ORDER = {code: n for n, code in enumerate(CATEGORIES)}

# What a person is told when a field is refused, whatever the exact reason.
MESSAGES = {
    "frequency": "Choose daily or weekly.",
    "max_papers": f"Choose a number of papers from {MIN_PAPERS} to {MAX_PAPERS}.",
    "format": "Choose HTML or plain text.",
    "timezone": "Unknown time zone. Use a name like Europe/Paris, America/New_York or UTC.",
    "send_hour": "Choose an hour from 0 to 23.",
    "relevance_weight": (
        f"Choose one of {', '.join(b.label for b in BLENDS[:-1])} or {BLENDS[-1].label}."
    ),
}
TOO_MANY_CATEGORIES = f"Choose at most {MAX_CATEGORIES} arXiv categories."
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


def split_codes(raw: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Category codes from a form (checkboxes) or CLI options: comma/space separated, each
    kept once in the order given. Codes are case-sensitive (cs.CV), so is the check."""
    if raw is None:
        return []
    parts = (
        _CODE_SPLIT.split(raw)
        if isinstance(raw, str)
        else [p for r in raw for p in _CODE_SPLIT.split(r)]
    )
    return list(dict.fromkeys(part for part in parts if part))


def blend_of(weight: float) -> Blend | None:
    """The step a weight is, if it is one (forms and the CLI offer no others)."""
    return next((blend for blend in BLENDS if blend.weight == weight), None)


def nearest_blend(weight: float) -> Blend:
    return min(BLENDS, key=lambda blend: abs(blend.weight - weight))


def unknown_categories_sentence(codes: list[str]) -> str:
    """Names the codes (a few, clipped: a form may post anything), says what a code looks like."""
    shown = [code if len(code) <= CODE_SHOWN else code[: CODE_SHOWN - 1] + "…" for code in codes]
    named = ", ".join(shown[:UNKNOWN_SHOWN])
    if len(codes) > UNKNOWN_SHOWN:
        named += f" and {len(codes) - UNKNOWN_SHOWN} more"
    noun = "category" if len(codes) == 1 else "categories"
    return f"Unknown arXiv {noun} ({named}). Codes look like cs.CV or stat.ML."


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
    relevance_weight: float = DEFAULT_WEIGHT
    arxiv_categories: list[str] = Field(default_factory=list, max_length=MAX_CATEGORIES)

    @field_validator("topics", "follow_organizations", "follow_authors", mode="before")
    @classmethod
    def _terms(cls, value: object) -> object:
        return split_terms(value) if isinstance(value, str | list) else value

    @field_validator("relevance_weight", mode="before")
    @classmethod
    def _blend_slug(cls, value: object) -> object:
        blend = _BLEND_BY_SLUG.get(value) if isinstance(value, str) else None
        return blend.weight if blend else value

    @field_validator("relevance_weight")
    @classmethod
    def _one_of_the_steps(cls, value: float) -> float:
        if blend_of(value) is None:
            raise ValueError(MESSAGES["relevance_weight"])
        return value

    @field_validator("arxiv_categories", mode="before")
    @classmethod
    def _codes(cls, value: object) -> object:
        if isinstance(value, str) or (
            isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        ):
            return split_codes(value)
        return value  # pydantic says what is wrong with it

    @field_validator("arxiv_categories")
    @classmethod
    def _known_codes(cls, value: list[str]) -> list[str]:
        unknown = unknown_categories(value)
        if unknown:
            raise ValueError(unknown_categories_sentence(unknown))
        # A set, kept in the table's order: the form posts its boxes in that order, so
        # saving the page unchanged changes nothing whatever order the CLI was given.
        return sorted(value, key=_TABLE_ORDER.__getitem__)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value not in ZONES:
            raise ValueError(MESSAGES["timezone"])
        return value

    @classmethod
    def of(cls, subscriber: Subscriber) -> Preferences:
        """A subscriber's stored choices. What no form could choose any more (a category
        since dropped from the taxonomy, a weight set by hand between two steps) is read
        as the nearest valid choice, so it never locks a reader out of their page; saving
        the page then shows the change."""
        return cls(
            frequency=subscriber.frequency,
            max_papers=subscriber.max_papers,
            topics=list(subscriber.topics or []),
            follow_organizations=list(subscriber.follow_organizations or []),
            follow_authors=list(subscriber.follow_authors or []),
            format=subscriber.format,
            timezone=subscriber.timezone,
            send_hour=subscriber.send_hour,
            relevance_weight=nearest_blend(subscriber.relevance_weight).weight,
            arxiv_categories=[
                code for code in subscriber.arxiv_categories or [] if category_name(code)
            ],
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
    if name == "arxiv_categories" and problem["type"] == "too_long":
        return TOO_MANY_CATEGORIES
    if name in TERM_NOUNS:
        noun = TERM_NOUNS[name]
        if problem["type"] == "too_long":
            return f"Use at most {MAX_TERMS} {noun}, separated by commas."
        if problem["type"] == "string_too_long":
            return f"Keep each of your {noun} under {MAX_TERM_LENGTH} characters."
    return str(problem["msg"]).removeprefix("Value error, ")
