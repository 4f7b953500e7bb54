"""Publishing by name from a running task: planning publishes every send batch of an
edition from inside one task, so what a publish leaves behind must not add up."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from workers.dispatch import INGEST, SEND_BATCH, CeleryDispatcher


def _app() -> Celery:
    app = Celery("dispatch-test", set_as_current=False, broker="memory://localhost/")
    app.conf.task_ignore_result = True
    # The in-memory broker's queues are shared by the whole process: one of its own.
    app.conf.task_default_queue = f"dispatch-test-{uuid.uuid4()}"
    return app


def _published(app: Celery) -> list[dict[str, Any]]:
    found = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(app.conf.task_default_queue)
        while simple.qsize():
            message = simple.get(timeout=1)
            headers = message.headers
            found.append({"id": headers["id"], "task": headers["task"], "args": message.payload[0]})
            message.ack()
        simple.close()
    return found


def test_a_task_publishing_many_batches_keeps_nothing_per_batch() -> None:
    app = _app()
    dispatcher = CeleryDispatcher(app)

    @app.task(bind=True)
    def plan(self: Any) -> int:
        for n in range(50):
            dispatcher.send_batch([n, n + 1000])
        # Celery's default keeps a result object here for every task a task sends.
        return len(self.request.children)

    assert plan.apply().get() == 0
    published = _published(app)
    assert [(p["task"], p["args"]) for p in published] == [
        (SEND_BATCH, [[n, n + 1000]]) for n in range(50)
    ]


def test_ingest_returns_the_published_tasks_id() -> None:
    app = _app()

    task_id = CeleryDispatcher(app).ingest()

    assert [(p["id"], p["task"]) for p in _published(app)] == [(task_id, INGEST)]
