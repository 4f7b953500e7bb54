"""Monitoring against the real thing: Redis db 12 as the broker, a real Celery worker with
concurrency 1 (so queued batches wait and the running one stays unacknowledged), a real
RedBeat beat, PostgreSQL and an SMTP sink."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from workers.celery_app import make_celery
from workers.dispatch import CeleryDispatcher

from papermail.clock import utcnow
from papermail.config import Settings
from papermail.db import session_scope
from papermail.ingest_stages import store_papers
from papermail.models import EditionKind
from papermail.ops import actions as operations
from papermail.ops import history as ops_history
from papermail.ops import monitoring
from papermail.sources.hf import SAMPLE_DAY, load_sample
from papermail.stages import build_edition, plan, snapshot
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.web.ops.routes import attach_ops
from papermail.wiring import Wiring
from tests.integration.conftest import flushed_redis
from tests.support.services import ROOT, CeleryWorker, wait_until

pytestmark = pytest.mark.integration
REDIS_DB = 12  # this module's (and test_pause_resume's) Redis database


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Overrides the conftest fixture (db 11): service_env and runtime then use db 12."""
    yield from flushed_redis(REDIS_DB)


def slow_env(service_env: dict[str, str], *, rate: float, batch_size: int) -> dict[str, str]:
    """Sending held to ``rate`` messages a second, so batches last long enough to watch."""
    return service_env | {
        "PAPERMAIL_SEND_RATE_PER_SECOND": str(rate),
        "PAPERMAIL_BATCH_SIZE": str(batch_size),
    }


def runtime_for(env: dict[str, str]) -> Wiring:
    fields = {k.removeprefix("PAPERMAIL_").lower(): v for k, v in env.items()}
    return Wiring(Settings(_env_file=None, **fields).model_copy(update={"edition_size": 20}))


def seed_edition_and_readers(rt: Wiring, *, readers: int) -> int:
    """The bundled sample's papers, one daily edition, ``readers`` active subscribers."""
    now = utcnow()
    store_papers(rt, result=load_sample(), source="bundled sample")
    summary = build_edition(
        rt, day=SAMPLE_DAY + dt.timedelta(days=1), kind=EditionKind.DAILY, rank_hour=6
    )
    assert summary.edition_id is not None
    with session_scope(rt.sessions) as session:
        for n in range(readers):
            add_subscriber(
                session,
                email=f"reader{n:04d}@example.org",
                prefs=Preferences(max_papers=3),
                now=now,
                confirmed=True,
            )
    return summary.edition_id


def plan_now(rt: Wiring, app: Celery, edition_id: int) -> int:
    reports = plan(
        rt, dispatcher=CeleryDispatcher(app), now=utcnow(), due_only=False, edition_ids=[edition_id]
    )
    return sum(r.planned for r in reports)


class CeleryBeat:
    """``celery -A workers.celery_app beat`` (RedBeat) as a child process group."""

    def __init__(self, env: dict[str, str], *, log_path: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CeleryBeat:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel=INFO"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def test_snapshot_sees_reserved_batches_workers_and_beat(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = slow_env(service_env, rate=10, batch_size=25)
    rt = runtime_for(env)
    app = make_celery(rt.settings)
    edition_id = seed_edition_and_readers(rt, readers=100)
    name = f"monitor-{uuid.uuid4().hex[:6]}@%h"
    worker = CeleryWorker(env, concurrency=1, name=name, log_path=tmp_path / "worker.log")
    with CeleryBeat(env, log_path=tmp_path / "beat.log"):
        worker.start()
        try:
            wait_until(
                lambda: (snapshot(rt, celery=app, now=utcnow()).beat or _no_beat).lock_held,
                timeout=60,
                message="beat to take the RedBeat lock",
            )
            # Beat's schedule sends this once a minute; send it now rather than wait.
            app.send_task("papermail.sample_metrics")
            wait_until(
                lambda: rt.redis.zcard(ops_history.SAMPLES_KEY) > 0,
                timeout=60,
                message="papermail.sample_metrics to record a sample",
            )

            assert plan_now(rt, app, edition_id) == 100  # four batches of 25, 2.5 s each

            def one_running_rest_waiting() -> bool:
                send = _send_queue(snapshot(rt, celery=app, now=utcnow()))
                return send.unacked >= 1 and send.ready >= 1

            wait_until(
                one_running_rest_waiting,
                timeout=60,
                message="a reserved batch with others waiting behind it",
            )
            snap = snapshot(rt, celery=app, now=utcnow())
            assert snap.errors == ()
            assert any(w.startswith("monitor-") for w in snap.workers or ())
            assert snap.beat is not None and snap.beat.last_tick is not None
            assert snap.beat.last_dispatch is not None
            assert snap.funnel["pending"] + snap.funnel["sending"] + snap.funnel["sent"] == 100

            metrics_text = _scrape(rt, app)
            families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
            unacked = [
                s.value
                for s in families["papermail_queue_messages"].samples
                if s.labels == {"queue": "papermail.send", "state": "unacked"}
            ]
            assert unacked and unacked[0] >= 1
            assert families["papermail_beat_lock_held"].samples[0].value == 1
            assert families["papermail_workers_online"].samples[0].value >= 1
        finally:
            operations.pause(rt.redis, now=utcnow(), reason="test over")  # end batches quickly
            worker.stop()


_no_beat = monitoring.BeatStatus(lock_held=False, last_tick=None, last_dispatch=None)


def _send_queue(snap: monitoring.Snapshot) -> monitoring.QueueDepth:
    return next(q for q in snap.queues if q.name == "papermail.send")


def _scrape(rt: Wiring, celery: Celery) -> str:
    app = FastAPI()
    attach_ops(app, wiring=rt, dispatcher=CeleryDispatcher(celery), celery=celery)
    with TestClient(app) as client:
        response = client.get("/metrics")  # development mode, no password: open
        assert response.status_code == 200
        return response.text
