"""Pause stops real workers within one batch; resume delivers the rest, each exactly once.

300 deliveries in batches of 100, two worker processes sending at a held rate to an SMTP
sink on 127.0.0.1, Redis db 12 as the broker, PostgreSQL as the ledger.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import func, select
from workers.celery_app import make_celery
from workers.dispatch import CeleryDispatcher

from papermail.clock import utcnow
from papermail.models import Delivery, DeliveryStatus
from papermail.ops import actions as operations
from papermail.pipeline.sending import PAUSE_CHECK_EVERY
from papermail.stages import snapshot
from papermail.wiring import Wiring
from papermail_dev.smtpsink import SmtpSink
from tests.integration.test_monitoring_live import (  # noqa: F401 (redis_url: db 12)
    plan_now,
    redis_url,
    runtime_for,
    seed_edition_and_readers,
    slow_env,
)
from tests.support.services import CeleryWorker, wait_until

pytestmark = pytest.mark.integration
READERS = 300
CONCURRENCY = 2


def by_status(rt: Wiring) -> dict[str, int]:
    with rt.sessions() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status.value: n for status, n in rows}


def settled(rt: Wiring, app: Celery) -> bool:
    """No batch is running or waiting: every task was consumed and no row is mid-send."""
    taken = snapshot(rt, celery=app, now=utcnow())
    send = next(q for q in taken.queues if q.name == "papermail.send")
    return send.ready == 0 and send.unacked == 0 and by_status(rt).get("sending", 0) == 0


def test_pause_stops_within_one_batch_and_resume_sends_the_rest_once(
    service_env: dict[str, str], sink: SmtpSink, tmp_path: Path
) -> None:
    env = slow_env(service_env, rate=40, batch_size=100)
    rt = runtime_for(env)
    app = make_celery(rt.settings)
    edition_id = seed_edition_and_readers(rt, readers=READERS)
    worker = CeleryWorker(env, concurrency=CONCURRENCY, log_path=tmp_path / "worker.log").start()
    try:
        assert plan_now(rt, app, edition_id) == READERS
        assert sink.wait_for(20, timeout=60), "sending never started"

        operations.pause(rt.redis, now=utcnow(), reason="integration test")
        at_pause = sink.total
        wait_until(lambda: settled(rt, app), timeout=60, message="paused workers to settle")
        after_pause = sink.total

        # Each running batch checks the flag every PAUSE_CHECK_EVERY messages, so at most
        # that many more (plus the one on the wire) per worker process.
        assert after_pause - at_pause <= CONCURRENCY * (PAUSE_CHECK_EVERY + 1)
        assert after_pause < READERS
        statuses = by_status(rt)
        assert statuses["sent"] == after_pause
        assert statuses["pending"] == READERS - after_pause  # released, not lost or failed

        with rt.sessions() as session:
            queued = operations.resume(
                rt.redis,
                session,
                now=utcnow(),
                batch_size=rt.settings.batch_size,
                publish=CeleryDispatcher(app).send_batch,
            )
        assert queued == READERS - after_pause
        assert sink.wait_for(READERS, timeout=120), f"only {sink.total} of {READERS} arrived"
        wait_until(lambda: settled(rt, app), timeout=60, message="the last batches to finish")
    finally:
        worker.stop()

    received = sink.received
    assert len(received) == READERS
    assert set(received.values()) == {1}, "somebody got the digest twice"
    assert by_status(rt) == {DeliveryStatus.SENT.value: READERS}
