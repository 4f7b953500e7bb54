"""What planning reads of its readers: the next chunk of those due, as plain rows.

A SQLAlchemy ``Row`` resolves an attribute by name on every access (~0.5 us measured);
the planner reads about nine of them a reader, on the thread every reader waits for. The
chunk is turned into ``ReaderRow`` tuples once, on the reader thread, where a field is an
index (~0.04 us).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Text, cast, exists, select
from sqlalchemy.orm import Session

from papermail.models import Delivery, Frequency, Subscriber, SubscriberStatus

READER_COLUMNS = (
    Subscriber.id,
    Subscriber.timezone,
    Subscriber.send_hour,
    # From here on, what a reader's selection depends on (ReaderRow.preferences).
    Subscriber.max_papers,
    # As text: decoding JSON for every row cost a third of planning; the planner
    # decodes each distinct value once.
    cast(Subscriber.topics, Text).label("topics"),
    cast(Subscriber.follow_organizations, Text).label("follow_organizations"),
    cast(Subscriber.follow_authors, Text).label("follow_authors"),
    cast(Subscriber.muted_authors, Text).label("muted_authors"),
    cast(Subscriber.muted_organizations, Text).label("muted_organizations"),
    cast(Subscriber.format, Text).label("format"),
    cast(Subscriber.arxiv_categories, Text).label("arxiv_categories"),
    Subscriber.relevance_weight,
)
PREFERENCES_FROM = 3  # READER_COLUMNS' index of max_papers


class ReaderRow(NamedTuple):
    """One reader as READER_COLUMNS reads them (the same names, in the same order)."""

    id: int
    timezone: str
    send_hour: int
    max_papers: int
    topics: str | None
    follow_organizations: str | None
    follow_authors: str | None
    muted_authors: str | None
    muted_organizations: str | None
    format: str
    arxiv_categories: str | None
    relevance_weight: float | None

    @property
    def preferences(self) -> tuple[object, ...]:
        """The columns as they came from max_papers on: equal for readers who state the
        same preferences (what planning memoises selections on)."""
        return self[PREFERENCES_FROM:]


def reader_row(session: Session, subscriber_id: int) -> ReaderRow | None:
    row = session.execute(
        select(*READER_COLUMNS).where(Subscriber.id == subscriber_id)
    ).one_or_none()
    return None if row is None else ReaderRow._make(row)


def due_chunk(
    session: Session,
    edition: tuple[int, Frequency],
    *,
    after_id: int,
    limit: int,
    only: Sequence[int] | None,
) -> list[ReaderRow]:
    """The next ``limit`` active subscribers of the edition's frequency after ``after_id``
    without a delivery of it; ``edition`` is (its id, its frequency)."""
    edition_id, frequency = edition
    already = exists().where(
        Delivery.subscriber_id == Subscriber.id,
        Delivery.edition_id == edition_id,
        # Implied by the join, but PostgreSQL cannot derive it: without it, each chunk's
        # anti-join read the edition's deliveries from the first subscriber on, so a
        # million-row plan read ~25M index entries (measured: 80 ms a chunk at 150k rows).
        Delivery.subscriber_id > after_id,
    )
    query = (
        select(*READER_COLUMNS)
        .where(
            Subscriber.status == SubscriberStatus.ACTIVE,
            Subscriber.frequency == frequency,
            Subscriber.id > after_id,
            ~already,
        )
        .order_by(Subscriber.id)
        .limit(limit)
    )
    if only is not None:
        query = query.where(Subscriber.id.in_(list(only)))
    return [ReaderRow._make(row) for row in session.execute(query)]
