"""Delivery backends: one small interface, chosen by configuration."""

from papermail.delivery.base import (
    BackendUnavailable,
    DeliveryError,
    MailBackend,
    MailConnection,
    OutgoingMessage,
    PermanentError,
    TransientError,
)

__all__ = [
    "BackendUnavailable",
    "DeliveryError",
    "MailBackend",
    "MailConnection",
    "OutgoingMessage",
    "PermanentError",
    "TransientError",
]
