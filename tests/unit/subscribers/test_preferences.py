"""Preferences: one model validates every choice, and says what is wrong in words."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from papermail.db import make_engine
from papermail.dbadmin import alembic_config, upgrade
from papermail.models import Frequency, MailFormat, Subscriber
from papermail.pipeline.ranking import Interests
from papermail.pipeline.relevance import DEFAULT_WEIGHT, ReaderProfile
from papermail.sources.arxiv_taxonomy import CATEGORIES
from papermail.subscribers.preferences import (
    BLENDS,
    MAX_PAPERS,
    MESSAGES,
    TOO_MANY_CATEGORIES,
    Preferences,
    blend_of,
    error_lines,
    field_errors,
    split_codes,
    split_terms,
)
from papermail.subscribers.subscriptions import add_subscriber
from tests.conftest import FIXED_NOW
from tests.support.migrations import insert_edition, insert_sent_delivery, insert_subscriber

NOW = FIXED_NOW


# --- the rules ----------------------------------------------------------------------------


def test_defaults() -> None:
    prefs = Preferences()
    assert prefs.frequency is Frequency.DAILY
    assert prefs.max_papers == 10
    assert prefs.topics == [] and prefs.follow_organizations == [] and prefs.follow_authors == []
    assert prefs.format is MailFormat.HTML
    assert (prefs.timezone, prefs.send_hour) == ("UTC", 7)
    assert prefs.relevance_weight == DEFAULT_WEIGHT and prefs.arxiv_categories == []


def test_the_default_blend_is_relevances_own_and_one_of_the_steps() -> None:
    # Preferences takes the default from pipeline/relevance.py; the column's defaults
    # (the model's and the migration's, for rows written without the ORM) must agree.
    column = Subscriber.__table__.c.relevance_weight
    assert Preferences().relevance_weight == ReaderProfile().weight == DEFAULT_WEIGHT
    assert column.default.arg == DEFAULT_WEIGHT
    assert float(column.server_default.arg) == DEFAULT_WEIGHT
    default = blend_of(DEFAULT_WEIGHT)
    assert default is not None and default.label == "Balanced"


# --- trending vs. for me ------------------------------------------------------------------


def test_the_blend_is_five_labelled_steps_from_trending_to_for_me() -> None:
    assert [(b.slug, b.weight, b.label) for b in BLENDS] == [
        ("trending", 0.0, "Trending"),
        ("mostly-trending", 0.25, "Mostly trending"),
        ("balanced", 0.5, "Balanced"),
        ("mostly-for-me", 0.75, "Mostly for me"),
        ("for-me", 1.0, "For me"),
    ]


@pytest.mark.parametrize(
    ("given", "weight"),
    [
        ("trending", 0.0),
        ("mostly-trending", 0.25),
        ("balanced", 0.5),
        ("mostly-for-me", 0.75),
        ("for-me", 1.0),
        (0, 0.0),
        (0.25, 0.25),
        (1, 1.0),
        ("0.75", 0.75),
    ],
)
def test_each_blend_step_is_accepted_by_name_or_weight(given: object, weight: float) -> None:
    assert Preferences(relevance_weight=given).relevance_weight == weight  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given", [0.3, 0.5000001, -0.25, 1.25, 2, "nan", "inf", "", "fast", "Balanced", "For Me", None]
)
def test_any_other_blend_is_refused_with_the_sentence(given: object) -> None:
    assert field_errors(refusal(relevance_weight=given)) == {
        "relevance_weight": MESSAGES["relevance_weight"]
    }


def test_the_blend_sentence_names_every_step() -> None:
    assert MESSAGES["relevance_weight"] == (
        "Choose one of Trending, Mostly trending, Balanced, Mostly for me or For me."
    )


# --- arXiv categories ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "codes"),
    [
        ("cs.RO, cs.LG", ["cs.RO", "cs.LG"]),
        ("cs.RO,cs.LG cs.RO\nstat.ML", ["cs.RO", "cs.LG", "stat.ML"]),
        (["q-bio.NC", "cs.LG,cs.RO", " cs.LG "], ["q-bio.NC", "cs.LG", "cs.RO"]),
        (("eess.IV", "eess.IV"), ["eess.IV"]),
        (" , ", []),
        ("", []),
        ([], []),
    ],
)
def test_categories_are_split_and_each_kept_once(raw: object, codes: list[str]) -> None:
    assert split_codes(raw) == codes  # type: ignore[arg-type]
    chosen = Preferences(arxiv_categories=raw).arxiv_categories  # type: ignore[arg-type]
    assert chosen == sorted(codes, key=list(CATEGORIES).index)


def test_categories_are_kept_in_the_tables_order_whatever_order_they_came_in() -> None:
    # The form posts its boxes in the table's order: saving the page unchanged must not
    # report a change for a list the CLI stored in another order.
    chosen = Preferences(arxiv_categories="stat.ML q-bio.NC cs.RO eess.IV cs.AI")
    assert chosen.arxiv_categories == ["cs.AI", "cs.RO", "eess.IV", "stat.ML", "q-bio.NC"]


def test_unknown_categories_are_refused_by_name() -> None:
    assert field_errors(refusal(arxiv_categories="cs.RO, cs.Robots")) == {
        "arxiv_categories": "Unknown arXiv category (cs.Robots). Codes look like cs.CV or stat.ML."
    }
    # Case matters (cs.CV, not cs.cv), as in the ingest settings.
    assert field_errors(refusal(arxiv_categories="cs.cv physics cs.LG")) == {
        "arxiv_categories": "Unknown arXiv categories (cs.cv, physics). "
        "Codes look like cs.CV or stat.ML."
    }


def test_a_refusal_names_a_few_unknown_codes_clipped_and_counts_the_rest() -> None:
    junk = ["x" * 200, *(f"bad.{n}" for n in range(6))]
    [sentence] = field_errors(refusal(arxiv_categories=junk)).values()
    assert sentence == (
        f"Unknown arXiv categories ({'x' * 23}…, bad.0, bad.1, bad.2, bad.3 and 2 more). "
        "Codes look like cs.CV or stat.ML."
    )


def test_at_most_twenty_categories_counted_after_duplicates_collapse() -> None:
    codes = list(CATEGORIES)
    assert len(Preferences(arxiv_categories=codes[:20] + codes[:5]).arxiv_categories) == 20
    assert field_errors(refusal(arxiv_categories=codes[:21])) == {
        "arxiv_categories": TOO_MANY_CATEGORIES
    }
    assert TOO_MANY_CATEGORIES == "Choose at most 20 arXiv categories."


def test_of_reads_what_no_form_offers_any_more_as_the_nearest_choice(session: Session) -> None:
    # A weight set by hand between steps, a code since dropped from the table: the
    # reader's page must still open (saving it then shows the change).
    subscriber, _ = add_subscriber(
        session, email="a@example.org", prefs=Preferences(), now=NOW, confirmed=True
    )
    subscriber.relevance_weight = 0.3
    subscriber.arxiv_categories = ["cs.RO", "cs.XX", "cs.LG"]
    session.flush()
    prefs = Preferences.of(subscriber)
    assert (prefs.relevance_weight, prefs.arxiv_categories) == (0.25, ["cs.LG", "cs.RO"])


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
        relevance_weight="mostly-for-me",
        arxiv_categories="cs.RO, eess.SY",
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
        ("relevance_weight", 0.6),
        ("relevance_weight", "lots"),
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


# --- the migration ---------------------------------------------------------------------------


def test_migration_0005_upgrades_and_downgrades_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'migrate.db'}")  # foreign keys on
    upgrade(engine, "0004")
    with engine.begin() as conn:
        insert_subscriber(conn)
        insert_edition(conn)
        insert_sent_delivery(conn)
    upgrade(engine, "0005")
    with engine.connect() as conn:
        # Existing readers: balanced, no categories.
        assert conn.execute(
            text("SELECT relevance_weight, arxiv_categories FROM subscribers")
        ).one() == (DEFAULT_WEIGHT, "[]")
    with Session(engine) as session:
        [reader] = session.query(Subscriber).all()
        assert Preferences.of(reader) == Preferences(max_papers=10)

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("subscribers")}
        assert not columns & {"relevance_weight", "arxiv_categories"}
        # No copy-and-swap of subscribers: the delivery row (ON DELETE CASCADE) survives,
        # and so does AUTOINCREMENT (ids are never reused).
        assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar() == 1
        ddl = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'subscribers'")
        ).scalar()
        assert "AUTOINCREMENT" in ddl
    upgrade(engine)  # and back up again
    with engine.connect() as conn:
        assert conn.execute(text("SELECT relevance_weight FROM subscribers")).scalar() == 0.5
    engine.dispose()
