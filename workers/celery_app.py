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
from celery.signals import setup_logging
from kombu import Exchange, Queue

from papermail.config import Settings, get_settings
from papermail.logging_setup import configure_logging

PIPELINE_QUEUE = "papermail.pipeline"  # ingest, editions, planning, rendering: short, rare
SEND_QUEUE = "papermail.send"  # send batches: the bulk; scale these workers out
BEAT_LOOP_SECONDS = 30
VISIBILITY_TIMEOUT = 3600  # seconds; no countdown/ETA may exceed it (Redis would redeliver)


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    return {
        "ingest-papers": {
            "task": "papermail.ingest_papers",
            "schedule": dt.timedelta(minutes=settings.ingest_interval_minutes),
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


def make_celery(settings: Settings) -> Celery:
    app = Celery("papermail")
    broker = settings.redis_url or "memory://"
    app.conf.update(
        broker_url=broker,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # At-least-once delivery of tasks; the ledger makes sending exactly-once.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Explicit exchange + routing key per queue: left implicit, both queues bind the
        # default key and every task would be delivered to both.
        task_queues=[
            Queue(q, Exchange(q, type="direct"), routing_key=q)
            for q in (PIPELINE_QUEUE, SEND_QUEUE)
        ],
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
        redbeat_lock_timeout=BEAT_LOOP_SECONDS * 5,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # Embedded mode: no broker, tasks run inline in the calling process.
        task_always_eager=settings.embedded,
        task_eager_propagates=True,
    )
    return app


@setup_logging.connect
def _configure_logging(**_kwargs: object) -> None:
    """Celery hands logging to us: papermail's format (JSON when configured) everywhere."""
    settings = get_settings()
    configure_logging(json=settings.log_json, level=settings.log_level)


app = make_celery(get_settings())
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
