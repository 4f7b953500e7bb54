"""The operators' audit log: what they did to whom, when, and why (``AuditEntry`` rows).

The subscriber desk (desk.py), CSV imports and exports and test sends record here; a
reason an operator gives is cleaned to one line and required where the desk asks for one.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy.orm import Session

from papermail.models import AuditEntry

MAX_REASON = 500


class Action(enum.StrEnum):
    """What an audit entry records."""

    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"
    IMPORT = "import"
    TEST_SEND = "test_send"


class DeskRefused(ValueError):
    """An operator's action that was refused, nothing changed; the message says why."""


def clean_reason(reason: str | None) -> str:
    """The reason an operator gave, on one line; DeskRefused when there is none."""
    text = " ".join((reason or "").split())
    if not text:
        raise DeskRefused("Give a reason: it is kept in the audit log with your name.")
    if len(text) > MAX_REASON:
        raise DeskRefused(f"Keep the reason under {MAX_REASON} characters.")
    return text


def record(
    session: Session,
    *,
    actor: str,
    action: Action,
    now: dt.datetime,
    subscriber_id: int | None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=now,
        actor=actor[:200],
        action=action.value,
        subscriber_id=subscriber_id,
        reason=reason,
        detail=detail or {},
    )
    session.add(entry)
    return entry
