"""A reader's word on the papers they were sent: more or less like this, and names to mute.

Every digest card carries "More like this" and "Less like this" links (signed per
reader, paper and direction: subscribers/tokens.py); the page they open records a mark
here with one POST. A reader has at most one mark per paper: saying the same again
changes nothing, saying the opposite replaces it, and the preferences page can undo it.

From the same page a reader can mute the paper's authors or its organisation. Muted
names live on the subscriber (``muted_authors``, ``muted_organizations``) and the
per-reader selection never picks a paper by any of them (pipeline/ranking.py).

Plain functions over a session; they flush, the caller commits.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papermail.models import Feedback, FeedbackDirection, Paper, Subscriber

MARKS_SHOWN = 50  # marks the preferences page lists, newest first
MAX_MUTED = 200  # names per list; a full list refuses more rather than grow without bound
MAX_NAME = 256  # the longest name kept (papers.organization is 256 wide)


class Recorded(enum.StrEnum):
    """What recording a mark did."""

    NEW = "new"
    UNCHANGED = "unchanged"  # the same mark was there already (a second click, a reload)
    REPLACED = "replaced"  # the opposite mark was there; this one took its place


@dataclass(frozen=True, slots=True)
class Mark:
    paper_id: str
    title: str
    direction: FeedbackDirection
    created_at: dt.datetime


def record(
    session: Session,
    *,
    subscriber_id: int,
    paper_id: str,
    direction: FeedbackDirection,
    now: dt.datetime,
) -> Recorded:
    """Mark a paper more or less like what the reader wants. Idempotent; the opposite
    direction replaces an earlier mark (and counts from ``now``)."""
    existing = _mark_row(session, subscriber_id, paper_id)
    if existing is None:
        try:
            with session.begin_nested():  # two requests at once (two clicks): one row, no 500
                session.add(
                    Feedback(
                        subscriber_id=subscriber_id,
                        paper_id=paper_id,
                        direction=direction,
                        created_at=now,
                    )
                )
            return Recorded.NEW
        except IntegrityError:
            existing = _mark_row(session, subscriber_id, paper_id)
            if existing is None:
                raise  # not the unique key: a paper or subscriber that does not exist
    if existing.direction is direction:
        return Recorded.UNCHANGED
    existing.direction = direction
    existing.created_at = now
    session.flush()
    return Recorded.REPLACED


def undo(session: Session, *, subscriber_id: int, paper_id: str) -> Mark | None:
    """Forget the reader's mark on a paper; returns it, or None if there was none."""
    found = session.execute(
        select(Feedback, Paper.title)
        .join(Paper, Paper.id == Feedback.paper_id)
        .where(Feedback.subscriber_id == subscriber_id, Feedback.paper_id == paper_id)
    ).first()
    if found is None:
        return None
    row, title = found
    mark = Mark(
        paper_id=row.paper_id,
        title=" ".join(title.split()),
        direction=row.direction,
        created_at=row.created_at,
    )
    session.delete(row)
    session.flush()
    return mark


def current(session: Session, *, subscriber_id: int, paper_id: str) -> FeedbackDirection | None:
    """The reader's mark on a paper, if any."""
    return session.scalar(
        select(Feedback.direction).where(
            Feedback.subscriber_id == subscriber_id, Feedback.paper_id == paper_id
        )
    )


def marked(session: Session, *, subscriber_id: int, limit: int = MARKS_SHOWN) -> list[Mark]:
    """The reader's marks, newest first, at most ``limit``."""
    rows = session.execute(
        select(Feedback.paper_id, Paper.title, Feedback.direction, Feedback.created_at)
        .join(Paper, Paper.id == Feedback.paper_id)
        .where(Feedback.subscriber_id == subscriber_id)
        .order_by(Feedback.created_at.desc(), Feedback.id.desc())
        .limit(limit)
    )
    return [
        Mark(paper_id=pid, title=" ".join(title.split()), direction=direction, created_at=at)
        for pid, title, direction, at in rows
    ]


def count_marked(session: Session, *, subscriber_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Feedback)
            .where(Feedback.subscriber_id == subscriber_id)
        )
        or 0
    )


# --- muting --------------------------------------------------------------------------------


class MuteKind(enum.StrEnum):
    AUTHOR = "author"
    ORGANIZATION = "organization"


_COLUMN = {
    MuteKind.AUTHOR: Subscriber.muted_authors,
    MuteKind.ORGANIZATION: Subscriber.muted_organizations,
}


class TooManyMuted(ValueError):
    """The reader's list of muted names is full."""


def clean_name(name: str) -> str:
    """A name as it is stored and shown: whitespace collapsed, bounded."""
    return " ".join(name.split())[:MAX_NAME]


def name_key(name: str) -> str:
    """How names compare: case and spacing do not matter."""
    return " ".join(name.split()).casefold()


def muted(subscriber: Subscriber, kind: MuteKind) -> list[str]:
    values = subscriber.muted_authors if kind is MuteKind.AUTHOR else subscriber.muted_organizations
    return [str(v) for v in values or ()]


def is_muted(subscriber: Subscriber, kind: MuteKind, name: str) -> bool:
    key = name_key(name)
    return any(name_key(v) == key for v in muted(subscriber, kind))


def mute(session: Session, *, subscriber_id: int, kind: MuteKind, name: str) -> bool:
    """Add a name to the reader's muted authors or organisations; False if it was there.

    Raises TooManyMuted when the list is full, ValueError for an empty name.
    """
    shown = clean_name(name)
    if not shown:
        raise ValueError("nothing to mute")
    names = _locked_list(session, subscriber_id, kind)
    if any(name_key(v) == name_key(shown) for v in names):
        return False
    if len(names) >= MAX_MUTED:
        raise TooManyMuted(f"already {len(names)} muted")
    _store(session, subscriber_id, kind, [*names, shown])
    return True


def unmute(session: Session, *, subscriber_id: int, kind: MuteKind, name: str) -> bool:
    """Take a name off the reader's muted list; False if it was not on it."""
    names = _locked_list(session, subscriber_id, kind)
    kept = [v for v in names if name_key(v) != name_key(name)]
    if len(kept) == len(names):
        return False
    _store(session, subscriber_id, kind, kept)
    return True


def _mark_row(session: Session, subscriber_id: int, paper_id: str) -> Feedback | None:
    return session.scalar(
        select(Feedback).where(
            Feedback.subscriber_id == subscriber_id, Feedback.paper_id == paper_id
        )
    )


def _locked_list(session: Session, subscriber_id: int, kind: MuteKind) -> list[str]:
    # FOR UPDATE (PostgreSQL): two mutes at once must not each write back a list without
    # the other's name. SQLite serialises writers anyway.
    raw = session.execute(
        select(_COLUMN[kind]).where(Subscriber.id == subscriber_id).with_for_update()
    ).scalar_one_or_none()
    if raw is None:
        raise LookupError(f"no subscriber {subscriber_id}")
    return [str(v) for v in raw]


def _store(session: Session, subscriber_id: int, kind: MuteKind, names: list[str]) -> None:
    column = "muted_authors" if kind is MuteKind.AUTHOR else "muted_organizations"
    # The ORM's default synchronisation sets the new list on a Subscriber already loaded.
    session.execute(
        update(Subscriber).where(Subscriber.id == subscriber_id).values({column: names})
    )
