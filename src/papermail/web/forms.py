"""The web forms: raw fields in, (value, per-field errors, what was typed) out.

A form does only what a form must: each field is there as one line of plain text
(no line breaks or control characters, not absurdly long), and the text becomes
values (numbers are typed with ASCII digits). Every rule about the values (ranges,
choices, time zones, how many topics) is Preferences', and its refusals are shown
next to the fields they concern, so the CLI and the web refuse the same things in
the same words. Errors are sentences a person can act on, keyed by field name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import ValidationError

from papermail.models import Frequency
from papermail.sources.arxiv_taxonomy import by_archive
from papermail.subscribers.preferences import (
    BLENDS,
    ZONES,
    Preferences,
    field_errors,
    nearest_blend,
)
from papermail.subscribers.subscriptions import InvalidEmail, normalize_email

T = TypeVar("T")
FormData = Mapping[str, str]

LINE_MAX = 1000  # any single-line field, before Preferences' own tighter checks
EMAIL_MAX = 254
REASON_MAX = 500
PREFERENCE_FIELDS = (
    "frequency",
    "max_papers",
    "topics",
    "follow_organizations",
    "follow_authors",
    "format",
    "timezone",
    "send_hour",
    "relevance_weight",
    "arxiv_categories",
)
NUMBER_FIELDS = ("max_papers", "send_hour")
SUBSCRIBE_FIELDS = ("email", "topics", "arxiv_categories", "frequency")
# Checkbox fields: posted once per ticked box, read as one comma-separated line
# (web/context.py::form_data), like the CLI's repeated option and the text fields' lists.
LIST_FIELDS = ("arxiv_categories",)
# What the forms offer: "trending vs. for me" as (value, label), categories by archive.
BLEND_CHOICES = tuple((blend.slug, blend.label) for blend in BLENDS)
CATEGORY_GROUPS = by_archive()
# What the time zone field suggests: region/city names (plus UTC), not aliases like "EST".
SUGGESTED_ZONES = (
    *sorted(z for z in ZONES if "/" in z and not z.startswith(("Etc/", "SystemV/", "posix/"))),
    "UTC",
)
REASONS = {
    "too_many": "Too many emails",
    "not_relevant": "The papers aren't relevant to me",
    "never_signed_up": "I never signed up",
    "other": "Something else",
}


@dataclass
class FormResult(Generic[T]):
    value: T | None
    values: dict[str, str]  # what the person typed, to show again
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and self.value is not None


@dataclass(frozen=True, slots=True)
class SubscribeInput:
    email: str  # normalised
    prefs: Preferences


def _line(form: FormData, name: str, *, max_length: int = LINE_MAX) -> tuple[str, str | None]:
    raw = form.get(name, "")
    if not isinstance(raw, str):
        return "", "Please fill this in as text."
    if any(ch in raw for ch in "\r\n"):
        return raw.replace("\r", " ").replace("\n", " "), "Line breaks aren't allowed here."
    if any(unicodedata.category(ch) == "Cc" for ch in raw):
        return "", "This contains characters that aren't allowed."
    if len(raw) > max_length:
        return raw[:max_length], f"Please keep this under {max_length} characters."
    return raw.strip(), None


def _whole_number(text: str) -> int | None:
    """The number typed in ASCII digits; None for anything else, which Preferences refuses."""
    return int(text) if text.isascii() and text.isdigit() else None


def _collect(form: FormData, names: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    values, errors = {}, {}
    for name in names:
        values[name], error = _line(form, name)
        if error:
            errors[name] = error
    return values, errors


def _preferences(
    values: dict[str, str], errors: dict[str, str], **fixed: object
) -> Preferences | None:
    """Preferences from the fields that are well-formed text; its refusals become field errors.

    Fields already in error are left out (Preferences fills in its default), so every
    other field is still checked and the page shows all the problems at once.
    """
    data: dict[str, object] = {
        name: _whole_number(values[name]) if name in NUMBER_FIELDS else values[name]
        for name in PREFERENCE_FIELDS
        if name in values and name not in errors
    }
    try:
        prefs = Preferences.model_validate(data | fixed)
    except ValidationError as exc:
        for name, message in field_errors(exc).items():
            errors.setdefault(name, message)
        return None
    return None if errors else prefs


def parse_subscribe(form: FormData, *, max_papers: int) -> FormResult[SubscribeInput]:
    """The landing page's form; it does not ask how many papers: new readers get ``max_papers``."""
    values, errors = _collect(form, SUBSCRIBE_FIELDS)
    values["frequency"] = values["frequency"] or Frequency.DAILY.value
    email = ""
    if "email" not in errors:
        if not values["email"]:
            errors["email"] = "Enter your email address."
        elif len(values["email"]) > EMAIL_MAX:
            errors["email"] = "That address is too long to be real."
        else:
            try:
                email = normalize_email(values["email"])
            except InvalidEmail as exc:
                detail = str(exc).strip().rstrip(".")
                errors["email"] = f"{detail}. Enter it like name@example.org."
    prefs = _preferences(values, errors, max_papers=max_papers)
    value = SubscribeInput(email=email, prefs=prefs) if prefs is not None else None
    return FormResult(value, values, errors)


def parse_preferences(form: FormData) -> FormResult[Preferences]:
    values, errors = _collect(form, PREFERENCE_FIELDS)
    return FormResult(_preferences(values, errors), values, errors)


def preference_values(prefs: Preferences) -> dict[str, str]:
    """A subscriber's settings as the form shows them."""
    return {
        "frequency": prefs.frequency.value,
        "max_papers": str(prefs.max_papers),
        "topics": ", ".join(prefs.topics),
        "follow_organizations": ", ".join(prefs.follow_organizations),
        "follow_authors": ", ".join(prefs.follow_authors),
        "format": prefs.format.value,
        "timezone": prefs.timezone,
        "send_hour": str(prefs.send_hour),
        "relevance_weight": nearest_blend(prefs.relevance_weight).slug,
        "arxiv_categories": ", ".join(prefs.arxiv_categories),
    }


def parse_reason(form: FormData) -> FormResult[str]:
    """The optional 'why are you leaving' answer: a choice plus a short note."""
    values, errors = _collect(form, ("reason", "note"))
    if values["reason"] and values["reason"] not in REASONS:
        errors["reason"] = "Choose one of the reasons, or none."
    if "note" not in errors and len(values["note"]) > REASON_MAX - 40:
        errors["note"] = f"Please keep this under {REASON_MAX - 40} characters."
    if errors:
        return FormResult(None, values, errors)
    parts = [REASONS[values["reason"]]] if values["reason"] else []
    if values["note"]:
        parts.append(values["note"])
    return FormResult(": ".join(parts), values)
