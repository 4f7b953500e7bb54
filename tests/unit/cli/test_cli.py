"""The `papermail` command, driven through click's CliRunner in a throwaway directory."""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect, select, update
from sqlalchemy.orm import Session

from papermail.cli.main import main
from papermail.config import get_settings
from papermail.models import JobRun, Subscriber, SubscriberStatus
from papermail.subscribers.preferences import MESSAGES
from papermail.web.forms import parse_preferences

EDITION_DAY = "2026-11-27"  # the bundled sample's papers were submitted on the 26th


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def subscribers_in(var: Path) -> list[Subscriber]:
    engine = create_engine(f"sqlite:///{var / 'papermail.db'}")
    try:
        with Session(engine) as session:
            return list(session.scalars(select(Subscriber).order_by(Subscriber.id)))
    finally:
        engine.dispose()


# --- demo ---------------------------------------------------------------------------------


DEMO_READERS = {
    "ada@example.org",
    "grace@example.org",
    "alan@example.org",
    "katherine@example.org",
    "margaret@example.org",
}


def demo_outbox(var: Path) -> dict[str, email.message.EmailMessage]:
    messages = {}
    for path in (var / "demo" / "outbox").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        messages[str(message["To"])] = message
    return messages


def text_cards(message: email.message.EmailMessage) -> list[str]:
    """Each paper of a digest's text part: "1. Title" up to the next number."""
    body = message.get_body(("plain",))
    assert body is not None
    return re.split(r"\n(?=\d+\. )", body.get_content())[1:]


def test_demo_offline_writes_an_outbox_of_five_parseable_emails(var_dir: Path) -> None:
    result = ok("demo", "--offline")
    outbox = var_dir / "demo" / "outbox"
    assert "bundled sample" in result.output
    assert (outbox / "index.html").is_file()
    emls = sorted(outbox.glob("*.eml"))
    assert len(emls) == 5
    recipients = set()
    for path in emls:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert message.defects == []
        assert message["Subject"]
        assert message["List-Unsubscribe"].startswith("<https://papers.example.org/unsubscribe/")
        assert message.get_body(("plain",)) is not None
        recipients.add(str(message["To"]))
    assert recipients == DEMO_READERS
    index = (outbox / "index.html").read_text(encoding="utf-8")
    assert all(address in index for address in recipients)


def test_demo_stores_both_sources_and_says_so(var_dir: Path) -> None:
    output = ok("demo", "--offline").output
    assert "ingested  40 papers from Hugging Face (40 new, 0 rejected)" in output
    assert (
        "ingested  16 papers from the bundled arXiv sample of 2026-11-26 "
        "(14 new, 2 merged with their Hugging Face rows, 0 rejected)"
    ) in output
    assert "margaret@example.org (cs.CR, cs.RO)" in output
    engine = create_engine(f"sqlite:///{var_dir / 'demo' / 'papermail.db'}")
    try:
        with Session(engine) as session:
            runs = session.scalars(select(JobRun).where(JobRun.stage == "ingest"))
            sources = [r.detail["source"] for r in runs if r.ok]
    finally:
        engine.dispose()
    assert {"bundled sample", "bundled arXiv sample"} <= set(sources)


def test_demo_sends_arxiv_only_papers_to_the_reader_who_follows_their_category(
    var_dir: Path,
) -> None:
    ok("demo", "--offline")
    outbox = demo_outbox(var_dir)
    margaret = outbox["margaret@example.org"]
    cards = text_cards(margaret)
    arxiv_only = [c for c in cards if "New on arXiv" in c]
    trending = [c for c in cards if "Trending on Hugging Face" in c]
    assert arxiv_only and trending  # new on arXiv, beside trending papers
    [tactile] = [c for c in arxiv_only if "Tactile-Conditioned Diffusion Policies" in c]
    assert "New on arXiv · cs.RO" in tactile
    assert "Why: Matches your topic “robot manipulation”" in tactile
    assert "Abstract: https://arxiv.org/abs/2611.24501 · PDF: https://arxiv.org/pdf/2611.24501" in (
        tactile
    )
    robotics = [c for c in arxiv_only if "New on arXiv · cs.RO" in c]
    assert len(robotics) >= 3
    html = margaret.get_body(("html",))
    assert html is not None and "New on arXiv · cs.RO" in html.get_content()
    # The paper on both sources is trending, not "new on arXiv".
    [both] = [c for c in cards if "Data Scaling Laws in Imitation Learning" in c]
    assert "Trending on Hugging Face" in both

    for address, message in outbox.items():
        if address != "margaret@example.org":
            assert not [c for c in text_cards(message) if "New on arXiv" in c], address


def test_demo_twice_starts_afresh(var_dir: Path) -> None:
    ok("demo", "--offline")
    ok("demo", "--offline")
    assert len(list((var_dir / "demo" / "outbox").glob("*.eml"))) == 5


# --- subscribers --------------------------------------------------------------------------


def test_db_upgrade_creates_the_schema(var_dir: Path) -> None:
    result = ok("db", "upgrade")
    assert "revision" in result.output
    engine = create_engine(f"sqlite:///{var_dir / 'papermail.db'}")
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"papers", "editions", "subscribers", "deliveries", "alembic_version"} <= tables
    ok("db", "upgrade")  # idempotent


def test_subscribers_add_list_and_remove(var_dir: Path) -> None:
    ok("db", "upgrade")
    added = ok(
        "subscribers",
        "add",
        "Ada@Example.org",
        "--topics",
        "diffusion, RL",
        "--max-papers",
        "5",
        "--timezone",
        "Europe/Paris",
        "--send-hour",
        "8",
    )
    assert "added ada@example.org (active)" in added.output
    ok("subscribers", "add", "bob@example.org", "--pending", "--format", "text")
    [ada, bob] = subscribers_in(var_dir)
    assert (ada.email, ada.status, ada.topics, ada.max_papers) == (
        "ada@example.org",
        SubscriberStatus.ACTIVE,
        ["diffusion", "RL"],
        5,
    )
    assert (ada.timezone, ada.send_hour) == ("Europe/Paris", 8)
    assert bob.status is SubscriberStatus.PENDING

    listing = ok("subscribers", "list").output
    assert "ada@example.org" in listing and "bob@example.org" in listing
    assert "2 of 2" in listing
    active_only = ok("subscribers", "list", "--status", "active").output
    assert "ada@example.org" in active_only and "bob@example.org" not in active_only

    removed = ok("subscribers", "remove", "ADA@example.org")
    assert "unsubscribed" in removed.output
    assert subscribers_in(var_dir)[0].status is SubscriberStatus.UNSUBSCRIBED

    ok("subscribers", "remove", "bob@example.org", "--erase")
    assert [s.email for s in subscribers_in(var_dir)] == ["ada@example.org"]


def test_adding_again_updates(var_dir: Path) -> None:
    ok("db", "upgrade")
    ok("subscribers", "add", "ada@example.org")
    result = ok("subscribers", "add", "ada@example.org", "--max-papers", "3")
    assert "updated ada@example.org" in result.output
    assert subscribers_in(var_dir)[0].max_papers == 3


@pytest.mark.parametrize(
    "address", ["not-an-address", "ada@", "adá@example.org", "ada@example.org\r\nBcc: x@y.org"]
)
def test_subscribers_add_refuses_an_invalid_email(var_dir: Path, address: str) -> None:
    ok("db", "upgrade")
    result = run("subscribers", "add", address)
    assert result.exit_code != 0
    assert "invalid email address" in result.output
    assert "Traceback" not in result.output
    assert subscribers_in(var_dir) == []


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--timezone", "Mars/Olympus", "--timezone: Unknown time zone"),
        ("--max-papers", "99", "--max-papers: Choose a number of papers from 1 to 30."),
        ("--send-hour", "25", "--send-hour: Choose an hour from 0 to 23."),
    ],
)
def test_subscribers_add_refuses_bad_preferences(
    var_dir: Path, option: str, value: str, words: str
) -> None:
    ok("db", "upgrade")
    result = run("subscribers", "add", "ada@example.org", option, value)
    assert result.exit_code != 0
    assert words in result.output
    assert "Traceback" not in result.output
    assert subscribers_in(var_dir) == []


def test_subscribers_add_names_every_bad_option_on_a_line_of_its_own(var_dir: Path) -> None:
    ok("db", "upgrade")
    args = ("--max-papers", "99", "--send-hour", "25", "--timezone", "Mars/Olympus")
    result = run("subscribers", "add", "ada@example.org", *args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: --max-papers: {MESSAGES['max_papers']}",
        f"--timezone: {MESSAGES['timezone']}",
        f"--send-hour: {MESSAGES['send_hour']}",
    ]
    assert subscribers_in(var_dir) == []


WEB_FORM = {
    "frequency": "daily",
    "max_papers": "10",
    "topics": "",
    "follow_organizations": "",
    "follow_authors": "",
    "format": "html",
    "timezone": "UTC",
    "send_hour": "7",
    "relevance_weight": "balanced",
    "arxiv_categories": "",
}


@pytest.mark.parametrize(
    ("option", "field", "value"),
    [
        ("--timezone", "timezone", "Mars/Olympus"),
        ("--max-papers", "max_papers", "99"),
        ("--send-hour", "send_hour", "25"),
        ("--topics", "topics", ", ".join(f"t{n}" for n in range(21))),
        ("--authors", "follow_authors", "x" * 81),
        ("--category", "arxiv_categories", "cs.Robots"),
    ],
)
def test_the_cli_and_the_web_form_refuse_the_same_values_in_the_same_words(
    var_dir: Path, option: str, field: str, value: str
) -> None:
    # Both build a Preferences and show what it says: one rule, one sentence.
    form = parse_preferences(WEB_FORM | {field: value})
    assert form.value is None and list(form.errors) == [field]
    ok("db", "upgrade")
    result = run("subscribers", "add", "ada@example.org", option, value)
    assert result.exit_code != 0
    assert f"{option}: {form.errors[field]}" in result.output
    assert subscribers_in(var_dir) == []


def test_subscribers_add_sets_the_blend_and_categories_and_list_shows_them(
    var_dir: Path,
) -> None:
    ok("db", "upgrade")
    ok(
        "subscribers",
        "add",
        "ada@example.org",
        "--blend",
        "mostly-for-me",
        "--category",
        "cs.RO",
        "--category",
        "stat.ML,cs.RO",
    )
    ok("subscribers", "add", "bob@example.org")
    [ada, bob] = subscribers_in(var_dir)
    assert (ada.relevance_weight, ada.arxiv_categories) == (0.75, ["cs.RO", "stat.ML"])
    assert (bob.relevance_weight, bob.arxiv_categories) == (0.5, [])
    listing = ok("subscribers", "list").output
    [ada_row] = [line for line in listing.splitlines() if "ada@example.org" in line]
    [bob_row] = [line for line in listing.splitlines() if "bob@example.org" in line]
    assert "blend" in listing and "categories" in listing
    assert "mostly-for-me" in ada_row and "cs.RO, stat.ML" in ada_row
    assert "balanced" in bob_row


def test_every_blend_step_is_a_choice_and_others_are_refused(var_dir: Path) -> None:
    ok("db", "upgrade")
    for n, (step, weight) in enumerate(
        [("trending", 0.0), ("mostly-trending", 0.25), ("balanced", 0.5), ("for-me", 1.0)]
    ):
        ok("subscribers", "add", f"r{n}@example.org", "--blend", step)
        assert subscribers_in(var_dir)[n].relevance_weight == weight
    result = run("subscribers", "add", "ada@example.org", "--blend", "0.3")
    assert result.exit_code == 2  # click's own refusal, naming the choices
    assert "'0.3' is not one of" in result.output and "mostly-for-me" in result.output


def test_unknown_categories_are_refused_by_name(var_dir: Path) -> None:
    ok("db", "upgrade")
    result = run(
        "subscribers", "add", "ada@example.org", "--category", "cs.cv", "--category", "cs.RO"
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --category: Unknown arXiv category (cs.cv). Codes look like cs.CV or stat.ML."
    )
    assert subscribers_in(var_dir) == []


def test_a_weight_set_by_hand_is_listed_as_its_number(var_dir: Path) -> None:
    ok("db", "upgrade")
    ok("subscribers", "add", "ada@example.org")
    engine = create_engine(f"sqlite:///{var_dir / 'papermail.db'}")
    with engine.begin() as connection:
        connection.execute(update(Subscriber).values(relevance_weight=0.3))
    engine.dispose()
    [row] = [line for line in ok("subscribers", "list").output.splitlines() if "ada@" in line]
    assert " 0.3 " in row


def test_removing_someone_unknown_fails(var_dir: Path) -> None:
    ok("db", "upgrade")
    result = run("subscribers", "remove", "nobody@example.org")
    assert result.exit_code != 0
    assert "no subscriber nobody@example.org" in result.output


@pytest.mark.parametrize("pending", [False, True])
def test_subscribers_add_never_brings_back_someone_who_unsubscribed(
    var_dir: Path, pending: bool
) -> None:
    ok("db", "upgrade")
    ok("subscribers", "add", "ada@example.org", "--max-papers", "4")
    ok("subscribers", "remove", "ada@example.org")
    args = ["--pending"] if pending else []
    result = run("subscribers", "add", "ADA@example.org", "--max-papers", "9", *args)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: not added: ada@example.org unsubscribed on ")
    assert "subscribing again on the web form" in line and "confirmation" in line
    [ada] = subscribers_in(var_dir)
    assert (ada.status, ada.max_papers) == (SubscriberStatus.UNSUBSCRIBED, 4)
    assert not list((var_dir / "outbox").glob("*.eml"))


def test_subscribers_add_never_brings_back_a_suppressed_address(var_dir: Path) -> None:
    ok("db", "upgrade")
    ok("subscribers", "add", "ada@example.org")
    engine = create_engine(f"sqlite:///{var_dir / 'papermail.db'}")
    with engine.begin() as connection:
        connection.execute(update(Subscriber).values(status=SubscriberStatus.SUPPRESSED))
    engine.dispose()
    result = run("subscribers", "add", "ada@example.org")
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: not added: ada@example.org is suppressed")
    assert subscribers_in(var_dir)[0].status is SubscriberStatus.SUPPRESSED


def test_subscribers_add_pending_emails_the_confirmation(var_dir: Path) -> None:
    ok("db", "upgrade")
    result = ok("subscribers", "add", "bob@example.org", "--pending")
    assert "added bob@example.org (pending): confirmation email sent" in result.output
    [eml] = (var_dir / "outbox").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "bob@example.org"
    body = message.get_body(("plain",))
    assert body is not None and "https://papers.example.org/confirm/" in body.get_content()
    [bob] = subscribers_in(var_dir)
    assert bob.status is SubscriberStatus.PENDING


@pytest.mark.parametrize("limit", ["0", "-1", "10001"])
def test_subscribers_list_refuses_a_limit_out_of_range(var_dir: Path, limit: str) -> None:
    ok("db", "upgrade")
    result = run("subscribers", "list", "--limit", limit)
    assert result.exit_code == 2
    assert "--limit" in result.output and "Traceback" not in result.output


def test_subscribers_list_prints_what_readers_typed_as_typed(var_dir: Path) -> None:
    # The public form accepts any topic; rich markup in one used to crash the listing.
    ok("db", "upgrade")
    ok("subscribers", "add", "ada@example.org", "--topics", "[/b] robots, [bold red]LOUD[/]")
    result = run("subscribers", "list")
    assert result.exit_code == 0, result.output
    assert "[/b] robots, [bold red]LOUD[/]" in result.output


# --- pipeline -----------------------------------------------------------------------------


def test_ingest_sample_then_rank_prints_the_edition(var_dir: Path) -> None:
    ok("db", "upgrade")
    ingested = ok("ingest", "--sample")
    assert "40" in ingested.output  # fetched
    ranked = ok("rank", "--date", EDITION_DAY, "--top", "5")
    assert f"daily edition 1 of {EDITION_DAY} built: 40 papers" in ranked.output
    assert "score" in ranked.output
    assert f"{EDITION_DAY} (daily)" in ranked.output
    again = ok("rank", "--date", EDITION_DAY)
    assert "already built" in again.output


def test_rank_without_papers_fails_clearly(var_dir: Path) -> None:
    ok("db", "upgrade")
    result = run("rank", "--date", EDITION_DAY)
    assert result.exit_code != 0
    assert "no papers" in result.output


def test_rank_refuses_a_bad_date(var_dir: Path) -> None:
    ok("db", "upgrade")
    result = run("rank", "--date", "yesterday")
    assert result.exit_code != 0
    assert "is not a date" in result.output


def test_preview_writes_the_subscribers_digest_with_their_reasons(var_dir: Path) -> None:
    ok("db", "upgrade")
    ok("ingest", "--sample")
    ok("rank", "--date", EDITION_DAY)
    ok("subscribers", "add", "ada@example.org", "--topics", "robotic manipulation")
    result = ok("preview", "--subscriber", "ada@example.org")
    path = Path(result.output.strip().splitlines()[-1])
    assert path.is_file() and path.suffix == ".html"
    assert path.is_relative_to(var_dir)
    page = path.read_text(encoding="utf-8")
    assert "Matches your topic" in page and "robotic manipulation" in page
    assert "ada@example.org" in page


def test_preview_to_a_chosen_file_for_a_text_subscriber(var_dir: Path, tmp_path: Path) -> None:
    ok("db", "upgrade")
    ok("ingest", "--sample")
    ok("rank", "--date", EDITION_DAY)
    ok("subscribers", "add", "tex@example.org", "--format", "text", "--topics", "scaling law")
    out = tmp_path / "preview.txt"
    ok("preview", "--subscriber", "tex@example.org", "--out", str(out))
    text = out.read_text(encoding="utf-8")
    assert "Matches your topic \u201cscaling law\u201d" in text
    assert "<html" not in text


def test_preview_of_an_unknown_subscriber_fails(var_dir: Path) -> None:
    ok("db", "upgrade")
    ok("ingest", "--sample")
    ok("rank", "--date", EDITION_DAY)
    result = run("preview", "--subscriber", "nobody@example.org")
    assert result.exit_code != 0
    assert "no subscriber" in result.output


def test_send_delivers_to_the_outbox_exactly_once(var_dir: Path) -> None:
    ok("db", "upgrade")
    ok("ingest", "--sample")
    ok("rank", "--date", EDITION_DAY)
    ok("subscribers", "add", "ada@example.org")
    ok("subscribers", "add", "bob@example.org", "--format", "text")
    edition_id = "1"
    first = ok("send", "--edition", edition_id)
    assert "planned 2 deliveries" in first.output
    outbox = var_dir / "outbox"
    assert len(list(outbox.glob("*.eml"))) == 2
    second = ok("send", "--edition", edition_id)
    assert "planned 0 deliveries" in second.output
    assert len(list(outbox.glob("*.eml"))) == 2
    manifest = [json.loads(line) for line in (outbox / "manifest.jsonl").read_text().splitlines()]
    assert sorted(entry["recipient"] for entry in manifest) == [
        "ada@example.org",
        "bob@example.org",
    ]


def test_new_subscribers_get_the_configured_number_of_papers(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERMAIL_DEFAULT_MAX_PAPERS", "7")
    get_settings.cache_clear()
    ok("db", "upgrade")
    ok("subscribers", "add", "ada@example.org")
    ok("subscribers", "add", "bob@example.org", "--max-papers", "3")
    papers = {s.email: s.max_papers for s in subscribers_in(var_dir)}
    assert papers == {"ada@example.org": 7, "bob@example.org": 3}
