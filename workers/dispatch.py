"""The Celery side of papermail.dispatch: publish tasks by name.

By name (``send_task``), not by importing workers.tasks: the web app and the CLI
publish without loading every task module or building a worker's wiring.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from papermail.config import Settings

SEND_BATCH = "papermail.send_batch"
SEND_CONFIRMATION = "papermail.send_confirmation"
INGEST = "papermail.ingest_papers"


@dataclass
class CeleryDispatcher:
    app: Celery
    queued: bool = True

    def send_batch(self, delivery_ids: list[int]) -> None:
        self._publish(SEND_BATCH, args=[list(delivery_ids)])

    def send_confirmation(self, subscriber_id: int) -> None:
        self._publish(SEND_CONFIRMATION, args=[subscriber_id])

    def ingest(self) -> str | None:
        return self._publish(INGEST)

    def _publish(self, name: str, args: list[object] | None = None) -> str:
        # Not added to the publishing task's request.children: Celery keeps a result
        # object there (~1 KB) for every task a running task sends, until it ends, so
        # planning a million readers (10,000 batches) held ~10 MB that only grew.
        return str(self.app.send_task(name, args=args, add_to_parent=False).id)


def celery_dispatcher(settings: Settings) -> CeleryDispatcher:
    # Imported here: workers.celery_app loads workers.tasks, which imports this module.
    from workers.celery_app import make_celery

    return CeleryDispatcher(make_celery(settings))
