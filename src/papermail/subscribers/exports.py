"""CSV exports for operators: the subscribers (all, or of one status) and the suppression list.

Rows stream from the database (``yield_per``), so a large list never sits in memory.
Every cell is neutralised against spreadsheet formula injection: a value that starts
with = + - @ tab or CR gets a leading ' (OWASP's advice), since an address or a topic
is whatever someone typed into the public form. The subscribers' columns are the ones
``papermail subscribers import`` reads back (imports.py), plus a few it ignores.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain

from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.models import AuditEntry, Subscriber, SubscriberStatus
from papermail.subscribers.audit import Action
from papermail.subscribers.preferences import blend_of

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH = 500

SUBSCRIBER_COLUMNS = (
    "email",
    "status",
    "frequency",
    "format",
    "max_papers",
    "topics",
    "organizations",
    "authors",
    "timezone",
    "send_hour",
    "blend",
    "categories",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "bounce_count",
)
SUPPRESSION_COLUMNS = ("email", "suppressed_at", "suppressed_by", "reason", "bounce_count")


def cell(value: object) -> str:
    """One CSV cell, safe to open in a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterator[str]:
    """The header and each row as one CSV record (CRLF-terminated, RFC 4180)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for values in chain([header], rows):
        writer.writerow([cell(v) for v in values])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def subscriber_rows(
    session: Session, *, status: SubscriberStatus | None = None
) -> Iterator[tuple[object, ...]]:
    query = select(Subscriber).order_by(Subscriber.id).execution_options(yield_per=BATCH)
    if status is not None:
        query = query.where(Subscriber.status == status)
    for s in session.scalars(query):
        blend = blend_of(s.relevance_weight)
        yield (
            s.email,
            s.status.value,
            s.frequency.value,
            s.format.value,
            s.max_papers,
            ", ".join(s.topics or []),
            ", ".join(s.follow_organizations or []),
            ", ".join(s.follow_authors or []),
            s.timezone,
            s.send_hour,
            blend.slug if blend else f"{s.relevance_weight:g}",
            " ".join(s.arxiv_categories or []),
            s.created_at,
            s.confirmed_at,
            s.unsubscribed_at,
            s.bounce_count,
        )


def suppression_rows(session: Session) -> Iterator[tuple[object, ...]]:
    """Suppressed addresses, with the latest operator suppression if there was one (the
    bounce policy's suppressions have none: their reason is the bounce count)."""
    query = (
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.SUPPRESSED)
        .order_by(Subscriber.id)
        .execution_options(yield_per=BATCH)
    )
    for batch in session.scalars(query).partitions(BATCH):
        latest = _latest_suppressions(session, [s.id for s in batch])
        for s in batch:
            entry = latest.get(s.id)
            yield (
                s.email,
                entry.at if entry else None,
                entry.actor if entry else "bounce policy",
                entry.reason if entry else f"{s.bounce_count} bounces",
                s.bounce_count,
            )


def _latest_suppressions(session: Session, ids: list[int]) -> dict[int, AuditEntry]:
    entries = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.subscriber_id.in_(ids), AuditEntry.action == Action.SUPPRESS.value)
        .order_by(AuditEntry.at, AuditEntry.id)
    )
    return {e.subscriber_id: e for e in entries if e.subscriber_id is not None}


def export_subscribers(
    session: Session, *, status: SubscriberStatus | None = None
) -> Iterator[str]:
    return csv_lines(SUBSCRIBER_COLUMNS, subscriber_rows(session, status=status))


def export_suppressions(session: Session) -> Iterator[str]:
    return csv_lines(SUPPRESSION_COLUMNS, suppression_rows(session))
