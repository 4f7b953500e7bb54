"""Operator actions (papermail.ops.actions) and their CLI commands (papermail.cli.ops)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import fakeredis
import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.cli import status as cli_status
from papermail.config import get_settings
from papermail.models import (
    Delivery,
    DeliveryStatus,
    EditionKind,
    Frequency,
    SubscriberStatus,
)
from papermail.ops import actions as operations
from papermail.ops.actions import OperationRefused
from papermail.ops.control import sending_paused
from papermail.ops.jobs import recorded
from papermail.ops.monitoring import BeatStatus, QueueDepth, Snapshot, StageRun
from papermail.ops.sources import SourceHealth
from papermail.pipeline.redispatch import redispatch_due
from tests.conftest import FIXED_NOW
from tests.support.ledger import seed_delivery, seed_edition, seed_funnel, seed_subscriber

HOSTILE = "[red]x[/red]<script>alert(1)</script>"


class Published(list[list[int]]):
    def __call__(self, ids: list[int]) -> None:
        self.append(list(ids))


@pytest.fixture
def published() -> Published:
    return Published()


def statuses(session: Session) -> dict[int, tuple[str, int]]:
    session.expire_all()
    return {d.id: (d.status.value, d.attempts) for d in session.scalars(select(Delivery))}


# --- retry failed ---------------------------------------------------------------------------


def test_retry_failed_gives_active_subscribers_failed_rows_a_fresh_start(session: Session) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    other = seed_edition(session, day=FIXED_NOW.date() - dt.timedelta(days=1))
    active = seed_delivery(
        session,
        edition=edition,
        status=DeliveryStatus.FAILED,
        attempts=5,
        last_error="gave up after 5 attempts: 451",
    )
    suppressed = seed_delivery(
        session,
        edition=edition,
        status=DeliveryStatus.FAILED,
        last_error="bounced: 550",
        subscriber=seed_subscriber(session, status=SubscriberStatus.SUPPRESSED),
    )
    elsewhere = seed_delivery(session, edition=other, status=DeliveryStatus.FAILED)
    sent = seed_delivery(session, edition=edition, status=DeliveryStatus.SENT)
    session.commit()

    assert operations.retry_failed(session, edition_id=edition.id, now=FIXED_NOW) == 1

    rows = statuses(session)
    assert rows[active.id] == ("retry", 0)
    assert rows[suppressed.id][0] == "failed"
    assert rows[elsewhere.id][0] == "failed"
    assert rows[sent.id][0] == "sent"
    row = session.get(Delivery, active.id)
    assert row is not None and row.next_attempt_at == FIXED_NOW and row.dispatched_at is None
    assert row.last_error is not None and row.last_error.startswith("operator retry 2026-11-26")
    assert row.last_error.endswith("gave up after 5 attempts: 451")


def test_retried_rows_are_what_the_next_redispatch_queues(
    session: Session, published: Published
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    failed = seed_delivery(session, edition=edition, status=DeliveryStatus.FAILED)
    session.commit()
    operations.retry_failed(session, edition_id=edition.id, now=FIXED_NOW)

    assert redispatch_due(session, now=FIXED_NOW, batch_size=100, publish=published) == 1
    assert published == [[failed.id]]


def test_retry_of_an_unknown_edition_is_refused(session: Session) -> None:
    with pytest.raises(OperationRefused, match="no edition 42"):
        operations.retry_failed(session, edition_id=42, now=FIXED_NOW)


# --- resend ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "was", [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED]
)
def test_resend_puts_a_finished_row_back_to_pending_and_publishes_it(
    session: Session, published: Published, was: DeliveryStatus
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    ada = seed_subscriber(session)
    row = seed_delivery(session, edition=edition, subscriber=ada, status=was, attempts=3)
    session.commit()

    result = operations.resend(
        session, subscriber=ada, edition_id=None, now=FIXED_NOW, publish=published
    )

    assert result == operations.ResendResult(edition.id, row.id, "reset", was.value)
    assert statuses(session)[row.id] == ("pending", 0)
    assert published == [[row.id]]
    note = session.get(Delivery, row.id).last_error  # type: ignore[union-attr]
    assert note == f"operator resend 2026-11-26 12:00Z; was {was.value}"


def test_resend_leaves_a_row_that_is_still_on_its_way(
    session: Session, published: Published
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    ada = seed_subscriber(session)
    row = seed_delivery(session, edition=edition, subscriber=ada, status=DeliveryStatus.RETRY)
    session.commit()

    result = operations.resend(
        session, subscriber=ada, edition_id=edition.id, now=FIXED_NOW, publish=published
    )

    assert result.action == "already_queued" and published == []
    assert statuses(session)[row.id][0] == "retry"


def test_resend_plans_a_row_the_subscriber_never_had(
    session: Session, published: Published
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    grace = seed_subscriber(session)
    session.commit()

    result = operations.resend(
        session, subscriber=grace, edition_id=None, now=FIXED_NOW, publish=published
    )

    assert result.action == "planned" and result.delivery_id is not None
    assert published == [[result.delivery_id]]
    assert statuses(session)[result.delivery_id] == ("pending", 0)
    assert result.edition_id == edition.id


def test_resend_picks_the_latest_edition_of_the_subscribers_frequency(
    session: Session, published: Published
) -> None:
    seed_edition(session, day=FIXED_NOW.date())
    weekly = seed_edition(
        session, day=FIXED_NOW.date() - dt.timedelta(days=3), kind=EditionKind.WEEKLY
    )
    reader = seed_subscriber(session, frequency=Frequency.WEEKLY)
    session.commit()
    result = operations.resend(
        session, subscriber=reader, edition_id=None, now=FIXED_NOW, publish=published
    )
    assert result.edition_id == weekly.id


@pytest.mark.parametrize(
    "status", [SubscriberStatus.SUPPRESSED, SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.PENDING]
)
def test_resend_never_mails_someone_who_is_not_active(
    session: Session, published: Published, status: SubscriberStatus
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    who = seed_subscriber(session, status=status)
    seed_delivery(session, edition=edition, subscriber=who, status=DeliveryStatus.SENT)
    session.commit()
    with pytest.raises(OperationRefused, match=status.value):
        operations.resend(
            session, subscriber=who, edition_id=None, now=FIXED_NOW, publish=published
        )
    assert published == []


def test_resend_without_any_edition_is_refused(session: Session, published: Published) -> None:
    who = seed_subscriber(session)
    with pytest.raises(OperationRefused, match="no daily edition yet"):
        operations.resend(
            session, subscriber=who, edition_id=None, now=FIXED_NOW, publish=published
        )


# --- pause / resume -------------------------------------------------------------------------


def test_pause_is_idempotent_and_says_why(redis: fakeredis.FakeRedis) -> None:
    assert operations.pause(redis, now=FIXED_NOW, reason="relay\nmaintenance")
    assert not operations.pause(redis, now=FIXED_NOW, reason="again")
    assert sending_paused(redis)
    assert redis.get("papermail:control:paused") == b"2026-11-26T12:00:00+00:00 relay maintenance"


def test_resume_queues_every_row_that_waited_including_ones_already_dispatched(
    session: Session, redis: fakeredis.FakeRedis, published: Published
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    seed_funnel(session, edition, {"pending": 3, "sent": 2})
    # Planned a minute ago: their batch reached a paused worker and was dropped.
    for row in session.scalars(select(Delivery)):
        row.dispatched_at = FIXED_NOW - dt.timedelta(minutes=1)
    session.commit()
    operations.pause(redis, now=FIXED_NOW)

    queued = operations.resume(redis, session, now=FIXED_NOW, batch_size=2, publish=published)

    assert queued == 3 and not sending_paused(redis)
    assert published == [[1, 2], [3]]


def test_resume_when_not_paused_does_nothing(
    session: Session, redis: fakeredis.FakeRedis, published: Published
) -> None:
    assert (
        operations.resume(redis, session, now=FIXED_NOW, batch_size=10, publish=published) is None
    )
    assert published == []


# --- the CLI --------------------------------------------------------------------------------


def _busy_snapshot() -> Snapshot:
    return Snapshot(
        taken_at=FIXED_NOW,
        embedded=False,
        paused=f"{(FIXED_NOW - dt.timedelta(minutes=3)).isoformat()} by ops: relay maintenance "
        "window that has a very long explanation attached to it",
        queues=(QueueDepth("papermail.pipeline", 0, 1), QueueDepth("papermail.send", 123456, 8)),
        workers=tuple(f"send-{i}@worker-host-{i}.internal.example.org" for i in range(12)),
        beat=BeatStatus(
            lock_held=True,
            last_tick=FIXED_NOW - dt.timedelta(seconds=12),
            last_dispatch=FIXED_NOW - dt.timedelta(seconds=40),
        ),
        runs=(
            StageRun(
                "ingest",
                FIXED_NOW - dt.timedelta(minutes=9),
                FIXED_NOW - dt.timedelta(minutes=8),
                True,
                {"fetched": 1234, "inserted": 56, "rejected": 7},
                FIXED_NOW,
            ),
            StageRun(
                "edition",
                FIXED_NOW,
                FIXED_NOW,
                False,
                {"error": "OperationalError: " + "x" * 300},
                None,
            ),
            StageRun("planning", FIXED_NOW, None, None, {}, None),
        ),
        funnel={
            "pending": 1_234_567,
            "sending": 800,
            "sent": 9_876_543,
            "retry": 12_345,
            "failed": 678,
            "suppressed": 90,
            "skipped": 12,
        },
        backlog={"pending": 1_234_567, "retry": 12_345, "sending": 800},
        send_rate_5m=12_345.6,
        send_rate_60m=9_876.5,
        bounces_today=678,
        subscribers={
            "pending": 12_345,
            "active": 1_234_567,
            "unsubscribed": 45_678,
            "suppressed": 901,
        },
        errors=("celery: OperationalError: " + "y" * 200,),
    )


def _busy_sources() -> tuple[SourceHealth, ...]:
    hour = dt.timedelta(hours=1)
    return (
        SourceHealth(
            source="hf",
            last_attempt_at=FIXED_NOW - hour,
            last_attempt_ok=False,
            last_error=f"HTTPStatusError: {HOSTILE} " + "z" * 150,
            last_success_at=FIXED_NOW - 30 * hour,
            accepted=1_234_567,
            rejected=89,
            lag=30 * hour,
            failures=60,
            alert="failing for over a day: last success 1d ago (2026-11-25 06:00 UTC), "
            "60 failed attempts since",
        ),
        SourceHealth("arxiv", None, None, None, None, None, None, None, 0, None),
    )


def test_status_view_fits_a_100_column_terminal_even_when_busy() -> None:
    console = Console(width=100, record=True, color_system=None)
    console.print(cli_status.status_view(_busy_snapshot(), _busy_sources()))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    for figure in (
        "123,456",
        "1,234,567",
        "12,345.6",
        "PAUSED since 11:57 UTC (3m ago)",
        "12 online",
        "ticked 12s ago",
        "1234 fetched, 56 new, 7 rejected",
        "1h ago (2026-11-26 11:00 UTC)",
        "1d 6h",
        "! hf: failing for over a day",
        f"hf last error: HTTPStatusError: {HOSTILE}",  # as typed, not read as markup
        "never fetched",
    ):
        assert figure in text, figure


def test_a_source_alert_is_red_and_upstream_markup_is_not_read() -> None:
    console = Console(width=100, record=True, color_system="truecolor", force_terminal=True)
    console.print(cli_status.status_view(_busy_snapshot(), _busy_sources()))
    styled = console.export_text(styles=True, clear=False)
    plain_text = console.export_text()
    alert = next(line for line in styled.splitlines() if "! hf: failing" in line)
    assert "\x1b[1;31m" in alert  # bold red
    assert HOSTILE in plain_text and "\x1b[31mx" not in styled  # "[red]x" stayed text


def test_status_view_says_when_the_sources_could_not_be_read() -> None:
    console = Console(width=100, record=True, color_system=None)
    console.print(cli_status.status_view(_busy_snapshot(), None))
    assert "no figures (database)" in console.export_text()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded installation under tmp_path, as the CLI would find it from the env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAPERMAIL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PAPERMAIL_MAIL_BACKEND", "memory")
    for name in ("PAPERMAIL_REDIS_URL", "PAPERMAIL_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    from papermail.db import make_engine
    from papermail.dbadmin import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'papermail.db'}")
    upgrade(engine)  # what `papermail db upgrade` makes: the CLI checks the revision
    engine.dispose()
    yield tmp_path
    get_settings.cache_clear()


def test_status_command_prints_the_table_and_json(cli_env: Path) -> None:
    from papermail.cli.main import main
    from papermail.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{cli_env / 'var' / 'papermail.db'}")
    sessions = make_session_factory(engine)
    then = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with recorded(sessions, stage="ingest", clock=lambda: then) as detail:
        detail.update(source="hf", fetched=48, inserted=6, updated=42, rejected=2)
    with (
        pytest.raises(RuntimeError),
        recorded(sessions, stage="ingest", clock=lambda: then) as detail,
    ):
        detail["source"] = "arxiv"
        raise RuntimeError(HOSTILE)
    engine.dispose()

    runner = CliRunner()
    table = runner.invoke(main, ["status"], terminal_width=100)
    assert table.exit_code == 0, table.output
    assert "Queues" in table.output and "Today's deliveries" in table.output
    assert "Sources" in table.output
    hf = next(line for line in table.output.splitlines() if line.startswith("hf "))
    assert hf.split()[-4:] == ["ok", "48", "2", "2h"]
    assert "! arxiv: no successful fetch in the last 14 days (1 failed attempt)" in table.output
    assert f"arxiv last error: RuntimeError: {HOSTILE}" in table.output  # shown as typed
    as_json = runner.invoke(main, ["status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["embedded"] is True and data["queues"][1]["name"] == "papermail.send"
    assert [(s["source"], s["state"]) for s in data["sources"]] == [
        ("hf", "ok"),
        ("arxiv", "alert"),
    ]
    assert data["sources"][1]["last_error"] == f"RuntimeError: {HOSTILE}"
    assert set(data["funnel"]) == {
        "pending",
        "sending",
        "sent",
        "retry",
        "failed",
        "suppressed",
        "skipped",
    }


def test_cli_actions_report_what_they_did(cli_env: Path) -> None:
    from papermail.cli.main import main

    runner = CliRunner()
    # Embedded mode has no workers and no shared Redis: pausing would be a flag nobody
    # reads (the next command would still say "running"), so it is refused, plainly.
    for command in (["pause", "--reason", "test"], ["resume"]):
        refused = runner.invoke(main, command)
        assert refused.exit_code == 1
        assert "needs Redis and workers" in refused.output
    missing = runner.invoke(main, ["retry-failed", "--edition", "5"])
    assert missing.exit_code == 1 and "no edition 5" in missing.output
    nobody = runner.invoke(main, ["resend", "--subscriber", "who@example.org"])
    assert nobody.exit_code == 1 and "no subscriber" in nobody.output


def test_a_resent_digest_gets_a_new_message_id(session: Session, published: Published) -> None:
    # Receivers drop a second message with a Message-ID they have seen: a resend must differ.
    edition = seed_edition(session, day=FIXED_NOW.date())
    ada = seed_subscriber(session)
    row = seed_delivery(session, edition=edition, subscriber=ada, status=DeliveryStatus.SENT)
    row.message_id = f"<papermail.e{edition.id}.d{row.id}@papers.example.org>"
    session.commit()
    first = row.message_id

    operations.resend(session, subscriber=ada, edition_id=None, now=FIXED_NOW, publish=published)
    resent = session.get(Delivery, row.id)
    assert resent is not None
    second = resent.message_id
    resent.status = DeliveryStatus.SENT  # the resend went out; resend once more
    session.commit()
    operations.resend(session, subscriber=ada, edition_id=None, now=FIXED_NOW, publish=published)

    assert second is not None and second != first
    assert second.startswith(f"<papermail.e{edition.id}.d{row.id}.r")
    assert second.endswith("@papers.example.org>")
    assert session.get(Delivery, row.id).message_id not in (first, second)  # type: ignore[union-attr]
