"""`papermail subscribers search | show | suppress | unsuppress | export | import |
test-send`, through click's CliRunner in a throwaway directory (embedded: SQLite, the
outbox backend, confirmations sent inline)."""

from __future__ import annotations

import csv
import email
import email.policy
import io
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from papermail.cli.main import main
from papermail.models import AuditEntry, Delivery, Subscriber
from tests.support.desk import seed_papers_edition

HOSTILE = "[/b] [bold red]LOUD[/] [link=https://evil.example]x[/link]"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def failed(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 1, result.output
    return result


def db(var: Path) -> Session:
    return Session(create_engine(f"sqlite:///{var / 'papermail.db'}"))


def statuses(var: Path) -> dict[str, str]:
    with db(var) as session:
        return {s.email: s.status.value for s in session.scalars(select(Subscriber))}


def audit(var: Path) -> list[AuditEntry]:
    with db(var) as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


@pytest.fixture
def var(var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("USER", "ada")
    ok("db", "upgrade")
    return var_dir


def test_search_by_substring_and_status_in_pages(var: Path) -> None:
    for n in range(4):
        ok("subscribers", "add", f"reader{n}@lab.example.org")
    ok("subscribers", "add", "other@example.net")

    found = ok("subscribers", "search", "LAB.example", "--per-page", "3")
    assert "4 found · page 1 of 2" in found.output
    assert "reader2@lab.example.org" in found.output and "other@" not in found.output
    assert "next: --page 2" in found.output
    second = ok("subscribers", "search", "lab", "--per-page", "3", "--page", "2")
    assert "reader3@lab.example.org" in second.output and "next:" not in second.output
    assert "0 found" in ok("subscribers", "search", "--status", "suppressed").output


def test_suppress_and_unsuppress_are_audited_as_the_cli_user(var: Path) -> None:
    ok("subscribers", "add", "ada@example.org")

    missing = run("subscribers", "suppress", "ada@example.org")
    assert missing.exit_code == 2 and "--reason" in missing.output
    assert (
        "Give a reason"
        in failed("subscribers", "suppress", "ada@example.org", "--reason", " ").output
    )
    done = ok("subscribers", "suppress", "ada@example.org", "--reason", "spam trap")
    assert "suppressed ada@example.org" in done.output
    assert statuses(var) == {"ada@example.org": "suppressed"}
    assert (
        "already suppressed" in failed("subscribers", "suppress", "1", "--reason", "again").output
    )

    back = ok("subscribers", "unsuppress", "#1", "--reason", "fixed")
    assert "unsuppressed ada@example.org: now active" in back.output
    assert [(e.actor, e.action, e.reason) for e in audit(var)] == [
        ("cli:ada", "suppress", "spam trap"),
        ("cli:ada", "unsuppress", "fixed"),
    ]


def test_unsuppress_never_reactivates_someone_who_unsubscribed(var: Path) -> None:
    ok("subscribers", "add", "bob@example.org")
    ok("subscribers", "remove", "bob@example.org")
    ok("subscribers", "suppress", "bob@example.org", "--reason", "complaint")
    result = ok("subscribers", "unsuppress", "bob@example.org", "--reason", "mistake")
    assert "now unsubscribed" in result.output
    assert statuses(var) == {"bob@example.org": "unsubscribed"}


def test_show_prints_the_story_with_untrusted_text_as_typed(var: Path) -> None:
    ok("subscribers", "add", "ada@example.org", "--topics", "robots")
    ok("subscribers", "suppress", "ada@example.org", "--reason", HOSTILE)

    shown = ok("subscribers", "show", "ada@example.org")

    assert "#1 ada@example.org: suppressed" in shown.output
    assert "unsuppress would make it active" in shown.output
    assert "suppressed (was active)" in shown.output and "cli:ada" in shown.output
    flat = " ".join(shown.output.split())
    assert "[/b] [bold red]LOUD[/]" in flat  # printed as typed, not read as markup
    assert "bounces counted: 0" in shown.output
    assert "no subscriber" in failed("subscribers", "show", "nobody@example.org").output
    assert "neither an email address" in failed("subscribers", "show", "not an address").output


def test_export_to_stdout_and_to_a_file_neutralises_formulas(var: Path, tmp_path: Path) -> None:
    ok("subscribers", "add", "ada@example.org", "--topics", "=1+1")
    ok("subscribers", "add", "bob@example.org", "--pending")
    ok("subscribers", "suppress", "bob@example.org", "--reason", "@complaint")

    out = ok("subscribers", "export", "--status", "active").output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["email"] for r in rows] == ["ada@example.org"]
    assert rows[0]["topics"] == "'=1+1"

    target = tmp_path / "suppressed.csv"
    written = ok("subscribers", "export", "--suppression-list", "--out", str(target))
    assert "1 rows written" in written.output
    listed = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    assert [(r["email"], r["reason"], r["suppressed_by"]) for r in listed] == [
        ("bob@example.org", "'@complaint", "cli:ada")
    ]
    assert (
        "leave out --status"
        in failed("subscribers", "export", "--suppression-list", "--status", "active").output
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_import_dry_run_changes_nothing_then_pending_gets_confirmations(
    var: Path, tmp_path: Path
) -> None:
    ok("subscribers", "add", "known@example.org")
    path = write(tmp_path, "email,topics\nnew@example.org,robots\nknown@example.org,\n")

    dry = ok("subscribers", "import", str(path), "--dry-run")
    assert "row 3, known@example.org: skipped. Already subscribed (active)" in dry.output
    assert "2 rows: would add 1 as pending, 1 skipped" in dry.output
    assert statuses(var) == {"known@example.org": "active"}

    done = ok("subscribers", "import", str(path))
    assert "imported 1 as pending (1 skipped)" in done.output
    assert "confirmation emails sent: 1" in done.output
    assert statuses(var) == {"known@example.org": "active", "new@example.org": "pending"}
    [eml] = (var / "outbox").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "new@example.org"
    assert [(e.actor, e.detail["status"]) for e in audit(var)] == [("cli:ada", "pending")]


def test_import_active_needs_a_consent_source(var: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "email\nnew@example.org\n")
    assert "consent source" in failed("subscribers", "import", str(path), "--active").output
    assert (
        "goes with --active"
        in failed("subscribers", "import", str(path), "--consent-source", "x").output
    )
    assert statuses(var) == {}

    ok("subscribers", "import", str(path), "--active", "--consent-source", "open day sheet")

    assert statuses(var) == {"new@example.org": "active"}
    [entry] = audit(var)
    assert (entry.reason, entry.detail["consent_source"]) == ("open day sheet", "open day sheet")
    assert not list((var / "outbox").glob("*.eml"))


def test_import_never_brings_back_a_leaver_or_a_suppressed_address(
    var: Path, tmp_path: Path
) -> None:
    ok("subscribers", "add", "left@example.org")
    ok("subscribers", "remove", "left@example.org")
    ok("subscribers", "add", "gone@example.org")
    ok("subscribers", "suppress", "gone@example.org", "--reason", "bounced")
    path = write(tmp_path, "email\nleft@example.org\ngone@example.org\n")

    result = ok("subscribers", "import", str(path), "--active", "--consent-source", "list")

    assert "left@example.org: skipped. Unsubscribed on" in result.output
    assert "gone@example.org: skipped. Suppressed" in result.output
    assert "imported 0 as active (2 skipped)" in result.output
    assert statuses(var) == {"left@example.org": "unsubscribed", "gone@example.org": "suppressed"}


def test_import_row_errors_import_nothing_and_print_as_typed(var: Path, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,frequency,categories\nada@example.org,hourly,\n"
        f"{HOSTILE}@x,daily,\nbob@example.org,,[bold]x[/bold]\n",
    )
    result = failed("subscribers", "import", str(path))
    assert "row 2, frequency: Choose daily or weekly." in result.output
    assert "row 3, email: The email address contains invalid characters" in result.output
    assert "row 4, categories: Unknown arXiv category ([bold]x[/bold])" in result.output
    assert "nothing imported: 3 problems" in result.output
    assert statuses(var) == {}


def test_import_refuses_a_file_over_the_size_limit(var: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"email\n" + b"a" * 1_000_001)
    result = failed("subscribers", "import", str(path))
    assert "at most 1,000,000 bytes" in result.output


def test_test_send_goes_to_the_outbox_with_a_test_subject_and_no_ledger_row(
    var: Path,
) -> None:
    ok("subscribers", "add", "ada@example.org", "--topics", "robotics")
    engine = create_engine(f"sqlite:///{var / 'papermail.db'}")
    with Session(engine) as session:
        seed_papers_edition(session)
        session.commit()

    result = ok("subscribers", "test-send", "ada@example.org", "--to", "Editor@Example.net")

    assert "to editor@example.net" in result.output
    [eml] = (var / "outbox").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert str(message["Subject"]).startswith("[test] ")
    assert message["To"] == "editor@example.net"
    with Session(engine) as session:
        assert session.execute(select(AuditEntry.action)).scalars().all() == ["test_send"]
        assert session.scalar(select(Delivery.id)) is None  # not in the ledger
    engine.dispose()
    assert (
        "not an email address"
        in failed("subscribers", "test-send", "ada@example.org", "--to", "nope").output
    )
