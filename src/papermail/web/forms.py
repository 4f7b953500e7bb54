"""The web forms: raw fields in, (value, per-field errors, what was typed) out.

Every field is checked at this edge: type, length, no line breaks or control
characters, allowed choices; then the domain's own Preferences model has the last
word, so the CLI and the web refuse the same things. Errors are sentences a person
can act on, keyed by field name so the page shows each one next to its field.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from zoneinfo import available_timezones

from pydantic import ValidationError

from papermail.models import Frequency, MailFormat
from papermail.subscriptions import (
    MAX_TERM_LENGTH,
    MAX_TERMS,
    InvalidEmail,
    Preferences,
    normalize_email,
    split_terms,
)

T = TypeVar("T")
FormData = Mapping[str, str]

LINE_MAX = 1000  # any single-line field, before its own tighter checks
EMAIL_MAX = 254
REASON_MAX = 500
MAX_PAPERS_RANGE = (1, 30)
PREFERENCE_FIELDS = (
    "frequency",
    "max_papers",
    "topics",
    "follow_organizations",
    "follow_authors",
    "format",
    "timezone",
    "send_hour",
)
SUBSCRIBE_FIELDS = ("email", "topics", "frequency")
ZONES = frozenset(available_timezones())
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


def _terms(value: str, noun: str) -> str | None:
    terms = split_terms(value)
    if len(terms) > MAX_TERMS:
        return f"Use at most {MAX_TERMS} {noun}, separated by commas."
    if any(len(t) > MAX_TERM_LENGTH for t in terms):
        return f"Keep each of your {noun} under {MAX_TERM_LENGTH} characters."
    return None


def _int(value: str, low: int, high: int, message: str) -> tuple[int | None, str | None]:
    if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
        return None, message
    return int(value), None


def _collect(form: FormData, names: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    values, errors = {}, {}
    for name in names:
        values[name], error = _line(form, name)
        if error:
            errors[name] = error
    return values, errors


def _check_choices(values: dict[str, str], errors: dict[str, str]) -> None:
    if "frequency" in values and values["frequency"] not in {f.value for f in Frequency}:
        errors.setdefault("frequency", "Choose daily or weekly.")
    if "format" in values and values["format"] not in {f.value for f in MailFormat}:
        errors.setdefault("format", "Choose HTML or plain text.")
    for name, noun in (
        ("topics", "topics"),
        ("follow_organizations", "organisations"),
        ("follow_authors", "authors"),
    ):
        if name in values and name not in errors and (problem := _terms(values[name], noun)):
            errors[name] = problem


def _preferences(
    values: dict[str, str], errors: dict[str, str], **fixed: object
) -> Preferences | None:
    """Build Preferences from checked values; any refusal becomes a field error."""
    if errors:
        return None
    data = {k: values[k] for k in PREFERENCE_FIELDS if k in values} | fixed
    try:
        return Preferences(**data)
    except ValidationError as exc:
        for problem in exc.errors():
            name = str(problem["loc"][0]) if problem["loc"] else "form"
            errors.setdefault(name, str(problem["msg"]).removeprefix("Value error, "))
        return None


def parse_subscribe(form: FormData) -> FormResult[SubscribeInput]:
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
    _check_choices(values, errors)
    prefs = _preferences(values, errors)
    value = SubscribeInput(email=email, prefs=prefs) if prefs is not None else None
    return FormResult(value, values, errors)


def parse_preferences(form: FormData) -> FormResult[Preferences]:
    values, errors = _collect(form, PREFERENCE_FIELDS)
    if "max_papers" not in errors:
        _, problem = _int(
            values["max_papers"], *MAX_PAPERS_RANGE, "Choose a number of papers from 1 to 30."
        )
        if problem:
            errors["max_papers"] = problem
    if "send_hour" not in errors:
        _, problem = _int(values["send_hour"], 0, 23, "Choose an hour from 0 to 23.")
        if problem:
            errors["send_hour"] = problem
    if "timezone" not in errors and values["timezone"] not in ZONES:
        errors["timezone"] = (
            "Unknown time zone. Use a name from the list, like Europe/Paris or America/New_York."
        )
    _check_choices(values, errors)
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
