"""The bounce mailbox is polled on beat's schedule only when one is configured, by a thin
task over bounce_stages.poll_bounces."""

from __future__ import annotations

import datetime as dt

import pytest
from workers.celery_app import app, beat_schedule

from papermail.bounces.mailbox import PollReport
from papermail.bounces.processor import Outcome
from papermail.config import Settings


def test_no_mailbox_no_poll() -> None:
    assert "poll-bounces" not in beat_schedule(Settings(_env_file=None))


def test_a_configured_mailbox_is_polled_every_few_minutes() -> None:
    import workers.tasks  # noqa: F401  (registers the tasks)

    settings = Settings(
        _env_file=None,
        bounce_mailbox_host="imap.example.org",
        bounce_mailbox_user="bounces",
        bounce_poll_minutes=3,
    )

    entry = beat_schedule(settings)["poll-bounces"]

    assert entry == {"task": "papermail.poll_bounces", "schedule": dt.timedelta(minutes=3)}
    assert "papermail.poll_bounces" in app.tasks


def test_the_task_returns_the_polls_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.tasks as tasks

    report = PollReport(read=3, refused=1, outcome=Outcome(stored=2))
    monkeypatch.setattr(tasks.bounce_stages, "poll_bounces", lambda w: report)
    monkeypatch.setattr(tasks, "wiring", lambda: _FakeWiring())

    assert tasks.poll_bounces.run() == {
        "read": 3,
        "stored": 2,
        "duplicates": 0,
        "refused": 1,
        "failed": 0,
    }


class _FakeWiring:
    """Enough of a Wiring for ``exclusive``: a Redis whose lock is always free."""

    def __init__(self) -> None:
        import fakeredis

        self.redis = fakeredis.FakeRedis()
