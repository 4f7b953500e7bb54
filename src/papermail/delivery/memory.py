"""In-memory delivery for tests: messages land in ``backend.outbox``.

Failure injection works like ``httpx.MockTransport``: pass a callable that looks at
the message and returns the error to raise, or None to deliver it.

    backend = MemoryBackend(fail=lambda m: PermanentError("550", code=550)
                            if m.recipient.startswith("bounce") else None)
"""

from __future__ import annotations

from collections.abc import Callable

from papermail.delivery.base import DeliveryError, OutgoingMessage, nothing

__all__ = ["FailFunc", "MemoryBackend", "MemoryConnection"]

FailFunc = Callable[[OutgoingMessage], DeliveryError | None]


class MemoryBackend:
    def __init__(self, fail: FailFunc | None = None) -> None:
        self.fail = fail
        self.outbox: list[OutgoingMessage] = []
        self.opened = 0
        self.closed = 0

    def open(self) -> MemoryConnection:
        self.opened += 1
        return MemoryConnection(self)

    @property
    def recipients(self) -> list[str]:
        return [message.recipient for message in self.outbox]


class MemoryConnection:
    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        self._closed = False

    def send(
        self, message: OutgoingMessage, *, before_accept: Callable[[], None] = nothing
    ) -> None:
        # Stricter than SMTP on purpose: sending after close() is a bug in the caller.
        if self._closed:
            raise RuntimeError("send() on a closed MemoryConnection")
        error = self._backend.fail(message) if self._backend.fail is not None else None
        if error is not None:
            raise error
        before_accept()
        self._backend.outbox.append(message)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend.closed += 1
