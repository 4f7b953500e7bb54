"""The Celery shell's configuration: queues, time limits, laziness."""

from __future__ import annotations

from workers.celery_app import app, make_celery, time_limits

from papermail.config import Settings


def test_every_task_has_a_soft_limit_below_its_hard_limit() -> None:
    import workers.tasks  # noqa: F401  (registers the tasks)

    limits = time_limits(Settings(_env_file=None))
    assert set(limits) == {name for name in app.tasks if name.startswith("papermail.")}
    assert all(0 < soft < hard for soft, hard in limits.values())


def test_the_limits_reach_the_tasks() -> None:
    import workers.tasks  # noqa: F401

    settings = Settings(_env_file=None, lease_seconds=420, fetch_deadline_seconds=90)
    celery = make_celery(settings)
    annotations = celery.conf.task_annotations
    assert annotations["papermail.send_batch"] == {"soft_time_limit": 420, "time_limit": 480}
    assert annotations["papermail.ingest_papers"]["soft_time_limit"] == 210
    # The process-wide app applies them to its registered tasks.
    send = app.tasks["papermail.send_batch"]
    assert (send.soft_time_limit, send.time_limit) == time_limits(Settings(_env_file=None))[
        "papermail.send_batch"
    ]


def test_send_batches_and_confirmations_go_to_the_send_queue() -> None:
    routes = make_celery(Settings(_env_file=None)).conf.task_routes
    assert routes["papermail.send_batch"] == {"queue": "papermail.send"}
    assert routes["papermail.send_confirmation"] == {"queue": "papermail.send"}


def test_arxiv_is_ingested_once_each_weekday_after_its_announcement() -> None:
    import workers.tasks  # noqa: F401
    from workers.celery_app import beat_schedule

    entry = beat_schedule(Settings(_env_file=None))["ingest-arxiv"]
    assert entry["task"] == "papermail.ingest_arxiv" and "papermail.ingest_arxiv" in app.tasks
    schedule = entry["schedule"]
    assert schedule.hour == {1} and schedule.minute == {10}  # type: ignore[attr-defined]
    assert schedule.day_of_week == {1, 2, 3, 4, 5}  # type: ignore[attr-defined]
