"""Delivery backends: one small interface, chosen by configuration."""

from papermail.delivery.base import (
    DeliveryError,
    MailBackend,
    MailConnection,
    OutgoingMessage,
    PermanentError,
    TransientError,
)

__all__ = [
    "DeliveryError",
    "MailBackend",
    "MailConnection",
    "OutgoingMessage",
    "PermanentError",
    "TransientError",
]
