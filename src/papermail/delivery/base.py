"""The contract every delivery backend keeps.

A backend opens connections; a connection sends one message at a time and says
how it went by raising (or not). Sending code never knows which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    sender: str  # envelope MAIL FROM (bare address)
    recipient: str  # envelope RCPT TO (bare address)
    data: bytes  # the full RFC 5322 message, CRLF line endings
    message_id: str  # "<...@domain>", also in data
    # True when no line of ``data`` starts with ".": SMTP can skip dot-stuffing, a search
    # of the whole message. The digests encoding.py makes guarantee it.
    dot_safe: bool = False


class DeliveryError(Exception):
    """Base for delivery failures; ``code`` is the SMTP reply code when there was one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientError(DeliveryError):
    """Try again later: 4xx replies, dropped connections, timeouts."""


class BackendUnavailable(TransientError):
    """The backend can send nothing at all right now (login refused, relay misconfigured):
    stop the batch instead of failing every message in it the same way."""


class PermanentError(DeliveryError):
    """Never try this recipient again with this message: 5xx replies."""


def nothing() -> None:
    return None


class MailConnection(Protocol):
    def send(
        self, message: OutgoingMessage, *, before_accept: Callable[[], None] = nothing
    ) -> None:
        """Deliver one message, or raise TransientError / PermanentError.

        ``before_accept`` runs at the last moment before the receiver can accept the
        message (for SMTP, before DATA's final "."); if it raises, the message is not
        delivered and the exception propagates as it is.
        """

    def close(self) -> None: ...


class MailBackend(Protocol):
    def open(self) -> MailConnection:
        """A connection reused for a whole batch; close it when the batch ends."""
