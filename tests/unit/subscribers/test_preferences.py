"""Preferences: one model validates every choice, and says what is wrong in words."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from papermail.models import Frequency, MailFormat
from papermail.pipeline.ranking import Interests
from papermail.subscribers.preferences import (
    MAX_PAPERS,
    MESSAGES,
    Preferences,
    error_lines,
    field_errors,
    split_terms,
)
from papermail.subscribers.subscriptions import add_subscriber
from tests.conftest import FIXED_NOW

NOW = FIXED_NOW


# --- the rules ----------------------------------------------------------------------------


def test_defaults() -> None:
    prefs = Preferences()
    assert prefs.frequency is Frequency.DAILY
    assert prefs.max_papers == 10
    assert prefs.topics == [] and prefs.follow_organizations == [] and prefs.follow_authors == []
    assert prefs.format is MailFormat.HTML
    assert (prefs.timezone, prefs.send_hour) == ("UTC", 7)


@pytest.mark.parametrize(
    ("raw", "terms"),
    [
        ("diffusion, RL; robotics\nvideo", ["diffusion", "RL", "robotics", "video"]),
        ("  diffusion  models ,, ;\n", ["diffusion models"]),
        ("Diffusion, diffusion, DIFFUSION", ["Diffusion"]),
        ("", []),
        (None, []),
        (["a, b", "c", "A"], ["a", "b", "c"]),
    ],
)
def test_terms_are_split_trimmed_and_deduplicated(raw: object, terms: list[str]) -> None:
    assert split_terms(raw) == terms  # type: ignore[arg-type]
    assert Preferences(topics=raw or []).topics == terms  # type: ignore[arg-type]


def test_all_term_lists_are_split() -> None:
    prefs = Preferences(follow_organizations="Google, Meta", follow_authors="Ada Lovelace")
    assert prefs.follow_organizations == ["Google", "Meta"]
    assert prefs.follow_authors == ["Ada Lovelace"]


def test_at_most_twenty_terms() -> None:
    assert len(Preferences(topics=[f"t{i}" for i in range(20)]).topics) == 20
    with pytest.raises(ValidationError):
        Preferences(topics=", ".join(f"t{i}" for i in range(21)))


def test_terms_are_at_most_eighty_characters() -> None:
    assert Preferences(topics="x" * 80).topics == ["x" * 80]
    with pytest.raises(ValidationError):
        Preferences(topics="x" * 81)


@pytest.mark.parametrize("max_papers", [0, -1, 31, 1000])
def test_max_papers_between_one_and_thirty(max_papers: int) -> None:
    with pytest.raises(ValidationError):
        Preferences(max_papers=max_papers)


@pytest.mark.parametrize("max_papers", [1, 30])
def test_max_papers_bounds_are_allowed(max_papers: int) -> None:
    assert Preferences(max_papers=max_papers).max_papers == max_papers


@pytest.mark.parametrize("hour", [-1, 24, 100])
def test_send_hour_is_a_clock_hour(hour: int) -> None:
    with pytest.raises(ValidationError):
        Preferences(send_hour=hour)


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"])
def test_iana_time_zones_are_accepted(zone: str) -> None:
    assert Preferences(timezone=zone).timezone == zone


@pytest.mark.parametrize("zone", ["Mars/Olympus", "CEST+2", "", "europe/paris", "../etc/passwd"])
def test_unknown_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(ValidationError, match="time zone"):
        Preferences(timezone=zone)


@pytest.mark.parametrize(
    ("field", "value"), [("frequency", "hourly"), ("format", "pdf"), ("max_papers", "many")]
)
def test_unknown_choices_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Preferences(**{field: value})  # type: ignore[arg-type]


def test_preferences_round_trip_through_a_subscriber(session: Session) -> None:
    prefs = Preferences(
        frequency=Frequency.WEEKLY,
        max_papers=4,
        topics="diffusion, RL",
        follow_organizations="Google",
        follow_authors="Ada Lovelace",
        format=MailFormat.TEXT,
        timezone="Asia/Tokyo",
        send_hour=21,
    )
    subscriber, _ = add_subscriber(
        session, email="a@example.org", prefs=prefs, now=NOW, confirmed=True
    )
    assert Preferences.of(subscriber) == prefs


def test_a_selection_reads_preferences_under_the_same_names() -> None:
    prefs = Preferences(
        max_papers=4, topics="video", follow_organizations="Google", follow_authors="Ada Lovelace"
    )
    assert Interests.of(prefs) == Interests(
        max_papers=4,
        topics=("video",),
        follow_organizations=("Google",),
        follow_authors=("Ada Lovelace",),
    )
    assert set(Interests.__dataclass_fields__) <= set(Preferences.model_fields)


# --- what a person is told ----------------------------------------------------------------


def refusal(**fields: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Preferences(**fields)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_papers", 99),
        ("max_papers", 0),
        ("max_papers", "many"),
        ("max_papers", None),
        ("send_hour", 25),
        ("send_hour", -1),
        ("send_hour", None),
        ("timezone", "Mars/Olympus"),
        ("timezone", ""),
        ("frequency", "hourly"),
        ("format", "pdf"),
    ],
)
def test_every_refusal_of_a_field_reads_the_same(field: str, value: object) -> None:
    assert field_errors(refusal(**{field: value})) == {field: MESSAGES[field]}


def test_messages_say_what_to_do() -> None:
    assert MESSAGES["max_papers"] == f"Choose a number of papers from 1 to {MAX_PAPERS}."
    assert MESSAGES["send_hour"] == "Choose an hour from 0 to 23."
    assert "Europe/Paris" in MESSAGES["timezone"]
    assert MESSAGES["timezone"] in str(
        refusal(timezone="Mars/Olympus")
    )  # pydantic's own report too


@pytest.mark.parametrize(
    ("field", "noun"),
    [
        ("topics", "topics"),
        ("follow_organizations", "organisations"),
        ("follow_authors", "authors"),
    ],
)
def test_term_lists_say_which_limit_and_name_their_terms(field: str, noun: str) -> None:
    too_many = ", ".join(f"t{n}" for n in range(21))
    assert field_errors(refusal(**{field: too_many})) == {
        field: f"Use at most 20 {noun}, separated by commas."
    }
    assert field_errors(refusal(**{field: "x" * 81})) == {
        field: f"Keep each of your {noun} under 80 characters."
    }
    both = too_many + ", " + "x" * 81
    assert field_errors(refusal(**{field: both})) == {
        field: f"Use at most 20 {noun}, separated by commas."
    }


def test_each_refused_field_is_reported_once() -> None:
    errors = field_errors(refusal(max_papers=99, send_hour=25, timezone="Mars/Olympus"))
    assert errors == {name: MESSAGES[name] for name in ("max_papers", "timezone", "send_hour")}


def test_error_lines_are_one_per_field_named_as_the_caller_says() -> None:
    exc = refusal(max_papers=99, send_hour=25)
    assert error_lines(exc) == [
        f"max_papers: {MESSAGES['max_papers']}",
        f"send_hour: {MESSAGES['send_hour']}",
    ]
    assert error_lines(exc, labels={"max_papers": "--max-papers"}) == [
        f"--max-papers: {MESSAGES['max_papers']}",
        f"send_hour: {MESSAGES['send_hour']}",
    ]
