"""ops.sources: each paper source's health from the ingest journal, on SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import JobRun
from papermail.ops import sources
from papermail.ops.jobs import recorded
from papermail.ops.sources import ALERT_AFTER, SourceHealth, read_source_health, source_health
from tests.conftest import FIXED_NOW

HOSTILE = "[red]x[/red]<script>alert(1)</script>"
HOUR = dt.timedelta(hours=1)


def run(
    session: Session,
    *,
    ago: dt.timedelta,
    ok: bool | None,
    stage: str = "ingest",
    took: dt.timedelta = dt.timedelta(seconds=20),
    **detail: Any,
) -> None:
    """One journaled run that started ``ago`` before FIXED_NOW (unfinished when ok is None)."""
    started = FIXED_NOW - ago
    session.add(
        JobRun(
            stage=stage,
            started_at=started,
            finished_at=None if ok is None else started + took,
            ok=ok,
            detail=detail,
        )
    )
    session.commit()


def health(session: Session, **options: Any) -> dict[str, SourceHealth]:
    return {h.source: h for h in source_health(session, now=FIXED_NOW, **options)}


def test_a_healthy_source_reports_its_last_successful_run(session: Session) -> None:
    run(session, ago=5 * HOUR, ok=True, source="hf", fetched=9, inserted=9, updated=0, rejected=0)
    run(
        session,
        ago=2 * HOUR,
        ok=True,
        source="hf",
        fetched=50,
        inserted=4,
        updated=46,
        rejected=3,
        rejected_examples=["#1 ?: no id"],
    )

    hf = health(session)["hf"]

    assert hf.state == "ok" and hf.alert is None
    assert hf.last_attempt_at == FIXED_NOW - 2 * HOUR and hf.last_attempt_ok is True
    assert (hf.accepted, hf.rejected) == (50, 3)
    assert hf.last_success_at == FIXED_NOW - 2 * HOUR + dt.timedelta(seconds=20)
    assert hf.lag == 2 * HOUR - dt.timedelta(seconds=20)
    assert hf.last_error is None and hf.failures == 0


def test_failing_for_less_than_a_day_shows_the_error_but_no_alert(session: Session) -> None:
    run(session, ago=20 * HOUR, ok=True, source="arxiv", inserted=30, updated=2, rejected=1)
    run(session, ago=3 * HOUR, ok=False, source="arxiv", error="ReadTimeout: upstream slow")
    run(session, ago=HOUR, ok=False, source="arxiv", error="HTTPStatusError: 503\nService down")

    arxiv = health(session)["arxiv"]

    assert arxiv.alert is None and arxiv.state == "failing"
    assert arxiv.last_attempt_ok is False
    assert arxiv.last_error == "HTTPStatusError: 503 Service down"  # one line
    assert arxiv.failures == 2
    assert (arxiv.accepted, arxiv.rejected) == (32, 1)  # from the last success, not the failure


def test_failing_for_more_than_a_day_is_an_alert(session: Session) -> None:
    run(session, ago=30 * HOUR, ok=True, source="hf", inserted=1, updated=1, rejected=0)
    for hours in (25, 12, 1):
        run(session, ago=hours * HOUR, ok=False, source="hf", error="ConnectError: refused")

    hf = health(session)["hf"]

    assert hf.state == "alert"
    assert hf.alert is not None and "failing for over a day" in hf.alert
    assert "3 failed attempts since" in hf.alert
    assert hf.lag is not None and hf.lag > dt.timedelta(days=1)


def test_a_day_counts_from_the_first_failure_not_from_the_last_success(session: Session) -> None:
    # arXiv is fetched Monday to Friday: Friday's success, then Monday's fetch fails.
    run(session, ago=72 * HOUR, ok=True, source="arxiv", inserted=30, updated=0, rejected=0)
    run(session, ago=HOUR, ok=False, source="arxiv", error="HTTPStatusError: 503")

    monday = health(session)["arxiv"]

    assert monday.state == "failing" and monday.alert is None
    assert monday.lag is not None and monday.lag > 2 * ALERT_AFTER  # three days since Friday

    # Tuesday's fetch, a day after Monday's, fails too: failing for over a day now.
    run(session, ago=HOUR - ALERT_AFTER, ok=False, source="arxiv", error="still down")
    tuesday = source_health(session, now=FIXED_NOW + ALERT_AFTER)[1]

    assert tuesday.state == "alert"
    assert tuesday.alert is not None and "2 failed attempts since" in tuesday.alert


def test_a_run_in_progress_neither_hides_nor_raises_the_alert(session: Session) -> None:
    run(session, ago=30 * HOUR, ok=True, source="hf", inserted=1, updated=0)
    run(session, ago=26 * HOUR, ok=False, source="hf", error="first trouble")
    run(session, ago=2 * HOUR, ok=False, source="hf", error="boom")
    run(session, ago=dt.timedelta(minutes=1), ok=None, source="hf")  # the retry, running
    run(session, ago=dt.timedelta(minutes=1), ok=None, source="arxiv")  # first ever, running

    found = health(session)

    assert found["hf"].state == "alert" and found["hf"].last_attempt_ok is None
    assert found["hf"].last_error == "boom"
    assert found["arxiv"].state == "running" and found["arxiv"].alert is None


def test_a_source_that_never_succeeded_but_failed_is_an_alert(session: Session) -> None:
    run(session, ago=HOUR, ok=False, source="arxiv", error="InvalidFeed: not Atom")

    arxiv = health(session)["arxiv"]

    assert arxiv.alert == "no successful fetch in the last 14 days (1 failed attempt)"
    assert arxiv.last_success_at is None and arxiv.lag is None and arxiv.accepted is None


def test_runs_older_than_each_sources_last_success_do_not_count(session: Session) -> None:
    for hours in (40, 30, 20):
        run(session, ago=hours * HOUR, ok=False, source="hf", error="old trouble")
        run(session, ago=hours * HOUR, ok=False, source="arxiv", error="old trouble")
    run(session, ago=3 * HOUR, ok=True, source="arxiv", inserted=2, updated=0, rejected=0)
    run(session, ago=HOUR, ok=True, source="hf", inserted=5, updated=1, rejected=0)

    found = health(session)

    assert [(h.state, h.failures, h.last_error) for h in found.values()] == [
        ("ok", 0, None),
        ("ok", 0, None),
    ]
    assert (found["hf"].accepted, found["arxiv"].accepted) == (6, 2)


def test_a_source_never_fetched_has_no_alert(session: Session) -> None:
    run(session, ago=HOUR, ok=True, source="hf", inserted=3, updated=0, rejected=0)

    arxiv = health(session)["arxiv"]

    assert arxiv.state == "never fetched" and arxiv.alert is None
    assert arxiv.last_attempt_at is None and arxiv.last_success_at is None
    assert list(health(session)) == ["hf", "arxiv"]


def test_rows_without_a_source_are_hf_and_other_sources_are_their_own(session: Session) -> None:
    run(session, ago=HOUR, ok=True, fetched=7, rejected=0)  # written before arXiv existed
    run(session, ago=dt.timedelta(minutes=5), ok=False, source="bundled sample", error="x")
    run(session, ago=dt.timedelta(minutes=1), ok=False, stage="edition", error="not ingest")

    found = health(session)
    assert found["hf"].state == "ok" and found["hf"].accepted == 7  # `fetched` as a fallback
    assert found["arxiv"].state == "never fetched"
    sample = health(session, sources=("bundled sample",))["bundled sample"]
    assert sample.last_error == "x"


def test_runs_older_than_the_lookback_are_not_read(session: Session) -> None:
    run(session, ago=sources.LOOKBACK + HOUR, ok=True, source="hf", inserted=1)
    run(session, ago=2 * HOUR, ok=False, source="hf", error="boom")

    hf = health(session)["hf"]

    assert hf.last_success_at is None
    assert hf.alert is not None and hf.alert.startswith("no successful fetch in the last 14 days")


def test_hostile_error_text_stays_data(session: Session) -> None:
    error = f"HTTPStatusError: {HOSTILE}\x1b[2J\r\n" + "y" * 500
    run(session, ago=HOUR, ok=False, source="hf", error=error)

    hf = health(session)["hf"]

    assert hf.last_error is not None
    assert hf.last_error.startswith(f"HTTPStatusError: {HOSTILE} [2J y")  # not escaped here
    assert "\x1b" not in hf.last_error and "\r" not in hf.last_error
    assert len(hf.last_error) == sources.ERROR_EXCERPT and hf.last_error.endswith("…")
    assert hf.as_dict()["last_error"] == hf.last_error


def test_what_recorded_journals_is_what_health_reads(
    session_factory: sessionmaker[Session],
) -> None:
    with (
        pytest.raises(RuntimeError),
        recorded(session_factory, stage="ingest", clock=lambda: FIXED_NOW - HOUR) as detail,
    ):
        detail["source"] = "arxiv"
        raise RuntimeError("feed went away")

    found = read_source_health(session_factory, now=FIXED_NOW)

    assert found is not None
    arxiv = {h.source: h for h in found}["arxiv"]
    assert arxiv.last_error == "RuntimeError: feed went away"
    assert arxiv.as_dict()["state"] == "alert"


def test_a_database_that_does_not_answer_gives_none() -> None:
    def broken() -> Session:
        raise ConnectionError("database gone")

    assert read_source_health(broken, now=FIXED_NOW) is None  # type: ignore[arg-type]


def test_span_says_durations_briefly() -> None:
    given = [
        None,
        dt.timedelta(seconds=45),
        dt.timedelta(minutes=12),
        3 * HOUR,
        3 * HOUR + dt.timedelta(minutes=5),
        dt.timedelta(days=2, hours=4),
        dt.timedelta(seconds=-5),
    ]
    assert [sources.span(d) for d in given] == ["-", "45s", "12m", "3h", "3h 5m", "2d 4h", "0s"]
