"""The Celery app, configured from Settings.

Run in production:
    celery -A workers.celery_app worker --loglevel=INFO
    celery -A workers.celery_app beat --loglevel=INFO

Beat uses RedBeat: the schedule lives in Redis and a lock there lets only one
beat schedule at a time, so a second beat (a failover, a mistake) does no harm.
"""

from __future__ import annotations

import datetime as dt

from celery import Celery
from celery.schedules import crontab
from celery.signals import celeryd_init, setup_logging, worker_process_init
from kombu import Exchange, Queue
from pydantic import ValidationError

from papermail import gc_tuning
from papermail.config import Settings, describe_errors, get_settings
from papermail.dispatch import PIPELINE_QUEUE, QUEUES, SEND_QUEUE
from papermail.logging_setup import configure_logging
from papermail.ops.monitoring import REDBEAT_LOCK_TIMEOUT

BEAT_LOOP_SECONDS = 30
VISIBILITY_TIMEOUT = 3600  # seconds; no countdown/ETA may exceed it (Redis would redeliver)


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    schedule: dict[str, dict[str, object]] = {
        "ingest-papers": {
            "task": "papermail.ingest_papers",
            "schedule": dt.timedelta(minutes=settings.ingest_interval_minutes),
        },
        # arXiv announces new submissions Sunday to Thursday at 20:00 US Eastern, that is
        # 00:00 or 01:00 UTC Monday to Friday: fetch them once, after the later of the two.
        "ingest-arxiv": {
            "task": "papermail.ingest_arxiv",
            "schedule": crontab(minute=10, hour=1, day_of_week="mon-fri"),
        },
        "build-daily-edition": {
            "task": "papermail.build_edition",
            "schedule": crontab(minute=settings.edition_minute_utc, hour=settings.edition_hour_utc),
            "kwargs": {"kind": "daily"},
        },
        "build-weekly-edition": {
            "task": "papermail.build_edition",
            "schedule": crontab(
                minute=settings.edition_minute_utc,
                hour=settings.edition_hour_utc,
                day_of_week=(settings.weekly_edition_weekday + 1) % 7,
            ),
            "kwargs": {"kind": "weekly"},
        },
        "plan-deliveries": {
            "task": "papermail.plan_deliveries",
            "schedule": crontab(minute=settings.plan_minute),
        },
        "redispatch-due": {
            "task": "papermail.redispatch",
            "schedule": dt.timedelta(seconds=settings.redispatch_interval_seconds),
        },
        "expire-pending-signups": {
            "task": "papermail.expire_pending",
            "schedule": crontab(minute=17, hour=3),
        },
        "sample-metrics": {  # one point a minute for the /ops 24-hour charts
            "task": "papermail.sample_metrics",
            "schedule": dt.timedelta(minutes=1),
        },
    }
    if settings.bounce_mailbox_configured:  # late bounces and complaints, from a mailbox
        schedule["poll-bounces"] = {
            "task": "papermail.poll_bounces",
            "schedule": dt.timedelta(minutes=settings.bounce_poll_minutes),
        }
    return schedule


def time_limits(settings: Settings) -> dict[str, tuple[float, float]]:
    """(soft, hard) seconds per task. The soft limit raises inside the task so it can
    stop cleanly; the hard one kills the process. Every stage bounds itself already
    (fetch deadline, batch lease); these are the backstop for what nobody foresaw."""
    lease = float(settings.lease_seconds)
    limits = {
        "papermail.ingest_papers": settings.fetch_deadline_seconds + 120,
        "papermail.ingest_arxiv": settings.fetch_deadline_seconds + 120,
        "papermail.build_edition": 300.0,
        "papermail.plan_deliveries": 1800.0,  # a million readers plan in about 100 s
        "papermail.render_variants": 600.0,
        # A batch hands its rows back before its lease ends; past it they are reclaimed.
        "papermail.send_batch": lease,
        "papermail.redispatch": 120.0,
        "papermail.send_confirmation": 4 * settings.smtp_timeout + 60,
        "papermail.expire_pending": 300.0,
        "papermail.sample_metrics": 50.0,  # it runs every minute
        "papermail.poll_bounces": 600.0,  # 500 messages at most a poll
    }
    return {name: (soft, soft + 60) for name, soft in limits.items()}


def make_celery(settings: Settings) -> Celery:
    """A Celery app for these settings (the CLI, the web app and tests make their own)."""
    app = Celery("papermail", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


WORKER_MAX_MEMORY_KIB = 250_000  # Celery counts resident memory in KiB


def celery_config(settings: Settings) -> dict[str, object]:
    return dict(
        broker_url=settings.redis_url or "memory://",
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # At-least-once delivery of tasks; the ledger makes sending exactly-once.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool process that planned holds the fitted pool and a chunk's working set;
        # once a task leaves it above this, it is replaced, so sending processes stay small.
        worker_max_memory_per_child=WORKER_MAX_MEMORY_KIB,
        # Explicit exchange + routing key per queue: left implicit, both queues bind the
        # default key and every task would be delivered to both.
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_default_exchange=PIPELINE_QUEUE,
        task_default_routing_key=PIPELINE_QUEUE,
        task_default_queue=PIPELINE_QUEUE,
        task_routes={
            "papermail.send_batch": {"queue": SEND_QUEUE},
            "papermail.send_confirmation": {"queue": SEND_QUEUE},
        },
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
        beat_scheduler="redbeat.RedBeatScheduler",
        beat_max_loop_interval=BEAT_LOOP_SECONDS,
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix="papermail:redbeat",
        redbeat_lock_timeout=REDBEAT_LOCK_TIMEOUT,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # Embedded mode: no broker, tasks run inline in the calling process.
        task_always_eager=settings.embedded,
        task_eager_propagates=True,
        task_annotations={
            name: {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in time_limits(settings).items()
        },
    )


def settings_or_exit() -> Settings:
    """The process's settings; a bad one ends a worker or beat with one line, no traceback."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise SystemExit(f"papermail: bad configuration: {describe_errors(exc)}") from None


@setup_logging.connect
def _configure_logging(**_kwargs: object) -> None:
    """Celery hands logging to us: papermail's format (JSON when configured) everywhere."""
    settings = settings_or_exit()
    configure_logging(json=settings.log_json, level=settings.log_level)


@worker_process_init.connect
def _tune_the_garbage_collector(**_kwargs: object) -> None:
    gc_tuning.tune()  # each pool process, after the fork: see papermail/gc_tuning.py


@celeryd_init.connect
def _refuse_the_in_memory_broker(**_kwargs: object) -> None:
    """A worker on the in-memory broker would sit idle forever: nothing can reach it."""
    if settings_or_exit().embedded:
        raise SystemExit(
            "papermail: a Celery worker needs a broker: set PAPERMAIL_REDIS_URL and "
            "PAPERMAIL_DATABASE_URL (embedded mode runs everything inline, no worker needed)"
        )


# Configured on first use, not at import: importing this module reads no environment.
app = Celery("papermail", set_as_current=False)
app.add_defaults(lambda: celery_config(settings_or_exit()))
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
