"""A Dispatcher that only writes down what it was asked to run later."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecordingDispatcher:
    queued: bool = True
    batches: list[list[int]] = field(default_factory=list)
    confirmations: list[int] = field(default_factory=list)
    ingests: int = 0

    def send_batch(self, delivery_ids: list[int]) -> None:
        self.batches.append(list(delivery_ids))

    def send_confirmation(self, subscriber_id: int) -> None:
        self.confirmations.append(subscriber_id)

    def ingest(self) -> str | None:
        self.ingests += 1
        return f"task-{self.ingests}"
