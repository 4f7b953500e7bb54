"""``bounce_events``: each bounce or complaint stored once, however often it arrives.

The dedup key is a hash of (message, recipient, kind): a webhook replayed, a mailbox read
twice or a DSN sent again for the same message and recipient finds its key taken and
changes nothing. "Message" is the best name the report gives for the message that
bounced (its Message-ID, else its delivery, else the report's own id).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from sqlalchemy import Connection, Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from papermail.models import BounceEvent, BounceKind, BounceSource

DIAGNOSTIC_CHARS = 500
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An enhanced status code (RFC 3463) in a reply or diagnostic: "550 5.1.1 <x>: no such user".
ENHANCED_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def dedup_key(message: str, recipient: str, kind: BounceKind) -> str:
    return hashlib.sha256(f"{message}\n{recipient.lower()}\n{kind.value}".encode()).hexdigest()


def trim(text: str | None, limit: int = DIAGNOSTIC_CHARS) -> str | None:
    """One line of printable text, at most ``limit`` characters (None if nothing is left)."""
    if not text:
        return None
    flat = _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
    return (flat[: limit - 1] + "…" if len(flat) > limit else flat) or None


def status_in(text: str | None) -> str | None:
    """The first enhanced status code in ``text`` ("5.1.1"), else None."""
    match = ENHANCED_STATUS.search(text or "")
    return ".".join(match.groups()) if match else None


def store(
    db: Connection | Session,
    *,
    kind: BounceKind,
    source: BounceSource,
    subscriber_id: int,
    delivery_id: int | None,
    recipient: str,
    status: str | None,
    diagnostic: str | None,
    message: str,
    now: dt.datetime,
) -> bool:
    """Insert the event unless one with its dedup key exists; True if it is new.

    One statement (INSERT ... ON CONFLICT DO NOTHING), so two copies of one event racing
    in two processes store it once and neither fails. Does not commit.
    """
    values = {
        "received_at": now,
        "kind": kind,
        "source": source,
        "subscriber_id": subscriber_id,
        "delivery_id": delivery_id,
        "recipient": recipient[:320],
        "status": (status or None) and status[:16],
        "diagnostic": trim(diagnostic),
        "dedup_key": dedup_key(message, recipient, kind),
    }
    # RETURNING, not rowcount: through a Session on PostgreSQL, a conflicting insert
    # reported a rowcount of 1 (a replayed webhook counted as new).
    inserted = db.execute(_insert_new(db).values(**values).returning(BounceEvent.id))
    return inserted.first() is not None


def _insert_new(db: Connection | Session) -> Insert:
    dialect = (db.dialect if isinstance(db, Connection) else db.get_bind().dialect).name
    if dialect == "postgresql":
        return postgresql.insert(BounceEvent).on_conflict_do_nothing(index_elements=["dedup_key"])
    if dialect == "sqlite":
        return sqlite.insert(BounceEvent).on_conflict_do_nothing(index_elements=["dedup_key"])
    raise NotImplementedError(f"bounce events on {dialect}")


def store_session_bounce(
    db: Connection | Session,
    *,
    subscriber_id: int,
    delivery_id: int | None,
    recipient: str,
    error: Exception,
    now: dt.datetime,
) -> bool:
    """A 5xx while sending (the server refused the recipient): its event, for the rates.
    The bounce policy has counted it already (``BouncePolicy.record``)."""
    text = str(error)
    code = getattr(error, "code", None)
    return store(
        db,
        kind=BounceKind.HARD,
        source=BounceSource.SESSION,
        subscriber_id=subscriber_id,
        delivery_id=delivery_id,
        recipient=recipient,
        status=status_in(text) or (str(code) if code else None),
        diagnostic=text,
        # Each refusal is its own event: nothing replays an SMTP reply.
        message=f"session:{delivery_id or ''}:{subscriber_id}:{now.isoformat()}",
        now=now,
    )
