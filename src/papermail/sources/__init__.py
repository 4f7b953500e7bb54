"""Paper sources: each turns an upstream API into validated PaperIn objects."""

from __future__ import annotations

from papermail.sources.base import (
    FetchResult,
    PaperIn,
    RejectedItem,
    SourceError,
    SourceUnreachable,
)

__all__ = ["FetchResult", "PaperIn", "RejectedItem", "SourceError", "SourceUnreachable"]
