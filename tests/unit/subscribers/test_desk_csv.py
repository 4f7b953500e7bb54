"""CSV export (formula injection neutralised) and import with explicit consent
(papermail.subscribers.exports, imports)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.models import AuditEntry, Subscriber, SubscriberStatus
from papermail.subscribers import desk, exports, imports
from papermail.subscribers.preferences import MESSAGES
from papermail.subscribers.subscriptions import unsubscribe
from tests.support.ledger import seed_subscriber

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
HOSTILE = ['=HYPERLINK("http://evil.example")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def rows_of(lines: object) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(lines))))  # type: ignore[arg-type]


def plan(session: Session, text: str, **kw: object) -> imports.ImportPlan:
    options: dict[str, object] = {"active": False, "consent_source": None, "default_max_papers": 10}
    return imports.plan_import(session, text.encode(), **(options | kw))  # type: ignore[arg-type]


def all_subscribers(session: Session) -> list[Subscriber]:
    return list(session.scalars(select(Subscriber).order_by(Subscriber.id)))


# --- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(value: str) -> None:
    assert exports.cell(value) == "'" + value


def test_ordinary_cells_are_left_alone() -> None:
    assert [exports.cell(v) for v in ("ada@example.org", "a=b", 7, None, "")] == [
        "ada@example.org",
        "a=b",
        "7",
        "",
        "",
    ]
    assert exports.cell(NOW) == "2026-12-01T09:30:00+00:00"


def test_the_subscriber_export_neutralises_what_readers_typed(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    ada.topics = ["=cmd|' /C calc'!A0", "robots"]
    ada.follow_authors = ["@Ada"]
    seed_subscriber(session, email="bob@example.org", status=SubscriberStatus.UNSUBSCRIBED)

    header, row, other = rows_of(exports.export_subscribers(session))

    assert header == list(exports.SUBSCRIBER_COLUMNS)
    record = dict(zip(header, row, strict=True))
    assert record["email"] == "ada@example.org" and record["status"] == "active"
    assert record["topics"] == "'=cmd|' /C calc'!A0, robots"
    assert record["authors"] == "'@Ada"
    assert record["blend"] == "balanced"
    assert other[0] == "bob@example.org"


def test_the_export_can_be_one_status(session: Session) -> None:
    seed_subscriber(session, email="ada@example.org")
    seed_subscriber(session, email="bob@example.org", status=SubscriberStatus.PENDING)
    rows = rows_of(exports.export_subscribers(session, status=SubscriberStatus.PENDING))
    assert [r[0] for r in rows[1:]] == ["bob@example.org"]


def test_the_suppression_list_says_who_and_why(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    desk.suppress(session, ada, actor="ops", reason="=2+2 complaint", now=NOW)
    bounced = seed_subscriber(session, email="gone@example.org", status=SubscriberStatus.SUPPRESSED)
    bounced.bounce_count = 3
    seed_subscriber(session, email="fine@example.org")
    session.flush()

    header, *rows = rows_of(exports.export_suppressions(session))

    assert header == list(exports.SUPPRESSION_COLUMNS)
    assert rows == [
        ["ada@example.org", "2026-12-01T09:30:00+00:00", "ops", "'=2+2 complaint", "0"],
        ["gone@example.org", "", "bounce policy", "3 bounces", "3"],
    ]


def test_an_export_reads_back_in_as_an_import(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    ada.topics = ["robots", "diffusion"]
    ada.arxiv_categories = ["cs.RO", "cs.LG"]
    session.flush()
    exported = "".join(exports.export_subscribers(session))
    ada_email = ada.email
    session.delete(ada)
    session.flush()

    result = plan(session, exported)

    assert result.ready and result.ignored_columns == imports.IGNORED
    [addition] = result.additions
    assert addition.email == ada_email
    assert addition.prefs.topics == ["robots", "diffusion"]
    assert set(addition.prefs.arxiv_categories) == {"cs.RO", "cs.LG"}


# --- import: the plan -------------------------------------------------------------------------


def test_an_import_plan_changes_nothing(session: Session) -> None:
    result = plan(session, "email,topics\nada@example.org,robots\n")
    assert [a.email for a in result.additions] == ["ada@example.org"]
    assert result.status is SubscriberStatus.PENDING
    assert all_subscribers(session) == []
    assert session.scalar(select(AuditEntry.id)) is None


def test_pending_by_default_and_each_row_is_audited(session: Session) -> None:
    text = "Email,Frequency,Max Papers\nAda@Example.org,weekly,5\nbob@example.org,,\n"
    result = imports.apply_import(session, plan(session, text), actor="cli:ops", now=NOW)

    ada, bob = all_subscribers(session)
    assert result.added == (ada.id, bob.id)
    assert (ada.email, ada.status, ada.frequency.value, ada.max_papers) == (
        "ada@example.org",
        SubscriberStatus.PENDING,
        "weekly",
        5,
    )
    assert bob.max_papers == 10 and ada.confirmed_at is None  # the configured default
    audit = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    assert [(e.subscriber_id, e.action, e.actor) for e in audit] == [
        (ada.id, "import", "cli:ops"),
        (bob.id, "import", "cli:ops"),
    ]
    assert audit[0].detail == {"status": "pending", "row": 2, "consent_source": None}


def test_active_needs_a_consent_source_recorded_on_every_row(session: Session) -> None:
    text = "email\nada@example.org\nbob@example.org\n"
    for missing in (None, "", "   "):
        with pytest.raises(imports.ImportRefused, match="consent source"):
            plan(session, text, active=True, consent_source=missing)

    consent = "sign-up sheet, lab open day 2026-11-20"
    planned = plan(session, text, active=True, consent_source=f"  {consent} ")
    imports.apply_import(session, planned, actor="ops", now=NOW)

    subscribers = all_subscribers(session)
    assert {s.status for s in subscribers} == {SubscriberStatus.ACTIVE}
    assert {s.confirmed_at for s in subscribers} == {NOW}
    audit = list(session.scalars(select(AuditEntry)))
    assert len(audit) == 2
    assert {(e.reason, e.detail["consent_source"], e.detail["status"]) for e in audit} == {
        (consent, consent, "active")
    }
    [event] = [e for e in desk.history(session, subscribers[0]) if e.actor]
    assert event.what == "imported as active" and event.reason == consent


def test_never_duplicates_and_never_brings_anyone_back(session: Session) -> None:
    seed_subscriber(session, email="active@example.org")
    seed_subscriber(session, email="pending@example.org", status=SubscriberStatus.PENDING)
    left = seed_subscriber(session, email="left@example.org")
    unsubscribe(session, left, now=dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    seed_subscriber(session, email="bounced@example.org", status=SubscriberStatus.SUPPRESSED)
    text = (
        "email\nactive@example.org\nPENDING@example.org\nleft@example.org\n"
        "bounced@example.org\nnew@example.org\nNew@Example.org\n"
    )

    planned = plan(session, text, active=True, consent_source="conference list")

    assert [a.email for a in planned.additions] == ["new@example.org"]
    reasons = {(s.row, s.email): s.reason for s in planned.skipped}
    assert reasons == {
        (2, "active@example.org"): "Already subscribed (active): left as it is.",
        (3, "pending@example.org"): "Already signed up, waiting to confirm: left as it is.",
        (4, "left@example.org"): (
            "Unsubscribed on 2026-11-02: only they can come back, by subscribing again on "
            "the web form."
        ),
        (5, "bounced@example.org"): "Suppressed: papermail does not mail this address.",
        (7, "new@example.org"): "Also on row 6: added once.",
    }
    imports.apply_import(session, planned, actor="ops", now=NOW)
    statuses = {s.email: s.status for s in all_subscribers(session)}
    assert statuses == {
        "active@example.org": SubscriberStatus.ACTIVE,
        "pending@example.org": SubscriberStatus.PENDING,
        "left@example.org": SubscriberStatus.UNSUBSCRIBED,
        "bounced@example.org": SubscriberStatus.SUPPRESSED,
        "new@example.org": SubscriberStatus.ACTIVE,
    }


def test_an_address_that_arrived_since_the_preview_is_skipped_not_duplicated(
    session: Session,
) -> None:
    planned = plan(session, "email\nada@example.org\nbob@example.org\n")
    seed_subscriber(session, email="ada@example.org", status=SubscriberStatus.UNSUBSCRIBED)

    result = imports.apply_import(session, planned, actor="ops", now=NOW)

    assert len(result.added) == 1
    assert [(s.email, s.reason.split(":")[0]) for s in result.skipped] == [
        ("ada@example.org", "Unsubscribed")
    ]
    assert [s.email for s in all_subscribers(session)] == ["ada@example.org", "bob@example.org"]


def test_row_errors_name_the_row_the_column_and_say_it_as_the_forms_do(session: Session) -> None:
    text = (
        "email,frequency,max_papers,timezone,blend,categories,send_hour\n"
        "ada@example.org,hourly,99,Mars/Olympus,loud,cs.XX,25\n"
        "not-an-address,,,,,,\n"
        ",daily,,,,,\n"
        "fine@example.org,daily,3,Europe/Paris,for-me,cs.RO,6\n"
    )

    planned = plan(session, text)

    assert not planned.ready
    errors = {(e.row, e.column): e.sentence for e in planned.errors}
    assert errors[(2, "frequency")] == MESSAGES["frequency"]
    assert errors[(2, "max_papers")] == MESSAGES["max_papers"]
    assert errors[(2, "timezone")] == MESSAGES["timezone"]
    assert errors[(2, "blend")] == MESSAGES["relevance_weight"]
    assert errors[(2, "send_hour")] == MESSAGES["send_hour"]
    assert errors[(2, "categories")].startswith("Unknown arXiv category (cs.XX)")
    assert "@" in errors[(3, "email")]
    assert errors[(4, "email")] == "Give an email address."
    with pytest.raises(imports.ImportRefused, match="Nothing was imported"):
        imports.apply_import(session, planned, actor="ops", now=NOW)
    assert all_subscribers(session) == []


def test_a_row_with_more_cells_than_columns_is_an_error(session: Session) -> None:
    planned = plan(session, "email,topics\nada@example.org,robots,extra\n")
    assert [(e.row, e.column) for e in planned.errors] == [(2, imports.ROW)]


def test_row_numbers_are_the_spreadsheets_even_with_blank_lines(session: Session) -> None:
    planned = plan(session, "email\n\nada@example.org\n\nbad\n")
    assert [(e.row, e.column) for e in planned.errors] == [(5, "email")]


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        (b"", "The file is empty."),
        (b"name,topics\nada,robots\n", "no email column"),
        (b"email,colour\nada@example.org,blue\n", "Unknown column colour"),
        (b"email,topics,Topics\nada@example.org,a,b\n", "appears twice"),
        (b"email\n", "no subscribers"),
        (b"email\n\xff\xfe@example.org\n", "not UTF-8"),
        (b"PK\x03\x04\x00\x00email", "NUL"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_whole(
    session: Session, data: bytes, sentence: str
) -> None:
    with pytest.raises(imports.ImportRefused, match=sentence):
        imports.plan_import(session, data, active=False, consent_source=None, default_max_papers=10)


def test_a_byte_order_mark_and_crlf_are_fine(session: Session) -> None:
    data = "\ufeffemail,topics\r\nada@example.org,robots\r\n".encode()
    planned = imports.plan_import(
        session, data, active=False, consent_source=None, default_max_papers=10
    )
    assert [a.email for a in planned.additions] == ["ada@example.org"]


def test_the_size_limits_are_refused_with_a_clear_sentence(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_big = b"email\n" + b"a" * imports.MAX_IMPORT_BYTES
    with pytest.raises(imports.ImportRefused, match=r"at most 1,000,000 bytes"):
        imports.plan_import(
            session, too_big, active=False, consent_source=None, default_max_papers=10
        )
    monkeypatch.setattr(imports, "MAX_IMPORT_ROWS", 3)
    rows = "email\n" + "".join(f"r{n}@example.org\n" for n in range(4))
    with pytest.raises(imports.ImportRefused, match="more than 3 rows"):
        plan(session, rows)
    assert plan(session, "email\n" + "".join(f"r{n}@example.org\n" for n in range(3))).ready


def test_confirmations_are_sent_for_each_and_failures_counted() -> None:
    sent: list[int] = []

    def send(subscriber_id: int) -> None:
        if subscriber_id == 2:
            raise ConnectionError("broker down")
        sent.append(subscriber_id)

    assert imports.send_confirmations([1, 2, 3], send=send) == [2]
    assert sent == [1, 3]
