"""Plan an edition's deliveries: due subscribers -> ledger rows -> send batches.

Planning streams subscribers in id order, a chunk at a time, so memory stays
flat from ten thousand to a million subscribers. Each chunk is committed before
its batches are published (a task must never name rows that do not exist yet).
The unique (subscriber, edition) key makes re-planning harmless.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from papermail.models import Delivery, Edition, Frequency, MailFormat
from papermail.pipeline import relevance
from papermail.pipeline.due_readers import ReaderRow, due_chunk, reader_row
from papermail.pipeline.histories import (
    Histories,
    overlapping_editions,
    papers_sent,
    pool_papers,
    reader_feedback,
)
from papermail.pipeline.picking import Ask, EditionPicker
from papermail.pipeline.plan_rows import (
    ChunkReader,
    ChunkWriter,
    Created,
    NewVariant,
    batches_by_variant,
)
from papermail.pipeline.relevance import DEFAULT_WEIGHT, ReaderProfile
from papermail.pipeline.selections import Selection, SelectionJson, variant_key

log = logging.getLogger(__name__)

Publish = Callable[[list[int]], None]

# Distinct sets of stated preferences whose decoding (and, for readers without feedback or
# history, whose variant key) a planning run remembers. An entry holds its row's values:
# ~0.5 KB or more. Readers type their topics, so a million of them can state hundreds of
# thousands of distinct sets: a million bench readers state ~41,700 (topics, sizes,
# formats, arXiv categories, weights), and with these unbounded their planning peaked
# 46 MB higher. Past the bound a memo starts over: a miss costs a decode (~3 us) or, for
# a key, the reader's picking.
PREFERENCES_REMEMBERED = 8_192
KEYS_REMEMBERED = 16_384


@dataclass
class PlanReport:
    edition_id: int
    considered: int = 0
    planned: int = 0
    not_due: int = 0
    batches: int = 0
    deliveries: int = 0  # the edition's deliveries, this run's and earlier ones
    variants: int = 0  # distinct selections among them

    @property
    def distinct_share(self) -> float:
        """Distinct selections per delivery: 1.0 when every reader's digest is their own."""
        return self.variants / self.deliveries if self.deliveries else 0.0


def _weight(raw: float | None) -> float:
    # A weight the form cannot produce (a hand edit) is clamped, not fatal to a plan.
    return DEFAULT_WEIGHT if raw is None else min(1.0, max(0.0, float(raw)))


def last_send_slot(now: dt.datetime, *, timezone: str, send_hour: int) -> dt.datetime:
    """The most recent instant at or before ``now`` when it was ``send_hour`` o'clock locally."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown timezone %r, using UTC", timezone)
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone)
    slot = local.replace(hour=send_hour, minute=0, second=0, microsecond=0)
    if slot > local:
        slot = (local - dt.timedelta(days=1)).replace(
            hour=send_hour, minute=0, second=0, microsecond=0
        )
    return slot.astimezone(dt.UTC)


class _Planner:
    """Per run: the edition's pool fitted once; readers with the same choices (and no
    feedback or history to tell them apart) share one variant."""

    def __init__(self, session: Session, edition: Edition, now: dt.datetime, due_only: bool):
        self.now, self.due_only = now, due_only
        # Plain values: chunks are read on another thread, which must not touch the ORM
        # objects of this session.
        self.edition_id = edition.id
        self.chunk_filter = (edition.id, Frequency(edition.kind.value))
        self.picker = EditionPicker(pool_papers(session, edition))
        self.overlapping = overlapping_editions(session, edition)
        self.edition_start = dt.datetime.combine(edition.day, dt.time(), tzinfo=dt.UTC)
        self._keys: dict[tuple[object, ...], str] = {}
        self._raw: dict[tuple[object, ...], tuple[object, ...]] = {}
        self._due: dict[tuple[str, int], bool] = {}
        self._papers: dict[str, relevance.Paper] = {}  # rated papers' text, read once
        self._seen: dict[str, frozenset[str]] = {}  # a variant's papers, decoded once
        self._readers: dict[tuple[object, ...], tuple[ReaderProfile, tuple[str, ...]]] = {}
        self._selection_json = SelectionJson()
        self.new_variants: list[NewVariant] = []
        self._pending: set[str] = set()  # keys in new_variants (cleared as they are inserted)

    def is_due(self, timezone: str, send_hour: int) -> bool:
        if not self.due_only:
            return True
        memo = (timezone, send_hour)
        if memo not in self._due:
            slot = last_send_slot(self.now, timezone=timezone, send_hour=send_hour)
            # Due once their local send hour has come on or after the edition's day began
            # (UTC). Comparing with the edition's creation instead would skip, for a whole
            # day, everyone whose send hour is the hour the edition is built.
            self._due[memo] = slot >= self.edition_start
        return self._due[memo]

    def history(self, session: Session, first_id: int, last_id: int) -> Histories:
        """Feedback and papers already sent, for the subscribers in an id range."""
        return Histories(
            feedback=reader_feedback(session, first_id, last_id, papers=self._papers),
            seen=papers_sent(
                session, first_id, last_id, editions=self.overlapping, memo=self._seen
            ),
        )

    def keys_for_rows(self, rows: Sequence[ReaderRow], history: Histories) -> list[str]:
        """Each row's variant key, the chunk's selections picked in one batch.

        Memoised on the raw column values for readers without feedback or history: a
        million of those share a few hundred selections.
        """
        keys: list[str | None] = []
        to_pick: dict[tuple[object, ...] | int, ReaderRow] = {}  # shared raw or subscriber id
        waiting: list[tuple[int, tuple[object, ...] | int]] = []
        for row in rows:
            raw = row.preferences
            shared = row.id not in history.feedback and row.id not in history.seen
            if shared and (key := self._keys.get(raw)) is not None:
                keys.append(key)
                continue
            ask: tuple[object, ...] | int = raw if shared else row.id
            to_pick.setdefault(ask, row)
            waiting.append((len(keys), ask))
            keys.append(None)
        picked = self.picker.pick_many([self.ask_for_row(row, history) for row in to_pick.values()])
        found: dict[tuple[object, ...] | int, str] = {}
        for (ask, row), picks in zip(to_pick.items(), picked, strict=True):
            found[ask] = self.key_for(_format(row.format), picks)
            if isinstance(ask, tuple):
                if len(self._keys) >= KEYS_REMEMBERED:
                    self._keys.clear()
                self._keys[ask] = found[ask]
        for at, ask in waiting:
            keys[at] = found[ask]
        return [key for key in keys if key is not None]

    def ask_for_row(self, row: ReaderRow, history: Histories) -> Ask:
        liked, disliked = history.feedback.get(row.id, ((), ()))
        base, categories = self._reader(row)
        reader = base
        if liked or disliked:
            reader = ReaderProfile(
                topics=base.topics,
                follow_organizations=base.follow_organizations,
                follow_authors=base.follow_authors,
                liked=liked,
                disliked=disliked,
                muted_authors=base.muted_authors,
                muted_organizations=base.muted_organizations,
                weight=base.weight,
            )
        return Ask(
            reader, k=row.max_papers, categories=categories, seen=history.seen.get(row.id, ())
        )

    def _reader(self, row: ReaderRow) -> tuple[ReaderProfile, tuple[str, ...]]:
        """A row's stated preferences, decoded once per distinct set of column values."""
        raw = row.preferences
        if (found := self._readers.get(raw)) is None:
            if len(self._readers) >= PREFERENCES_REMEMBERED:
                self._readers.clear()
            reader = ReaderProfile(
                topics=_terms(row.topics),
                follow_organizations=_terms(row.follow_organizations),
                follow_authors=_terms(row.follow_authors),
                muted_authors=_terms(row.muted_authors),
                muted_organizations=_terms(row.muted_organizations),
                weight=_weight(row.relevance_weight),
            )
            found = self._readers[raw] = (reader, _terms(row.arxiv_categories))
        return found

    def take_new_variants(self) -> list[NewVariant]:
        """The chunk's new variants, handed to the writer; the next chunk starts afresh."""
        taken, self.new_variants = self.new_variants, []
        self._pending.clear()
        return taken

    def key_for(self, fmt: str, picks: Selection) -> str:
        text = self._selection_json(picks)
        key = variant_key(self.edition_id, fmt, text)
        # Inserted once per chunk at most; across chunks and runs the key's uniqueness
        # makes a repeat harmless, and a run-long set of a million keys would not be.
        if key not in self._pending:
            self._pending.add(key)
            self.new_variants.append(NewVariant(key, fmt, picks, text))
        return key


def plan_edition(
    session: Session,
    *,
    edition: Edition,
    now: dt.datetime,
    batch_size: int,
    publish: Publish,
    due_only: bool = True,
    # Readers per chunk: the planner holds three chunks at once (one read ahead, one
    # picked, one being written: feedback, selections, the inserts' parameters). Planning
    # 100k readers with feedback histories in one process, its RSS peaked 47 MB above
    # its start with 2,000 a chunk, 28 MB with 1,000, 20 MB with 500 and 16 MB with 250,
    # taking 8.4, 8.8, 9.0 and 9.9 s: 500 keeps a pipeline worker near 200 MB for 8%
    # more time (2,000 chunks a million readers, each written while the next is picked).
    chunk_size: int = 500,
    only_subscribers: Sequence[int] | None = None,
    prepare: Callable[[], object] = lambda: None,
) -> PlanReport:
    """Create missing delivery rows for subscribers who are due; publish them in batches.

    Commits after each chunk, then publishes the chunk's batches; calls ``prepare``
    once before the first batch is published (to render the edition, so no batch
    has to).
    """
    planner = _Planner(session, edition, now, due_only)
    report = PlanReport(edition_id=edition.id)
    prepared = False

    def published(chunk: Future[Created]) -> None:
        nonlocal prepared
        created = chunk.result()  # committed: a batch never names rows that do not exist
        report.planned += len(created)
        for batch in batches_by_variant(created, batch_size):
            if not prepared:
                prepare()
                prepared = True
            publish(batch)
            report.batches += 1

    def read(session: Session, after_id: int) -> tuple[list[ReaderRow], Histories]:
        rows = due_chunk(
            session,
            planner.chunk_filter,
            after_id=after_id,
            limit=chunk_size,
            only=only_subscribers,
        )
        return rows, (planner.history(session, rows[0].id, rows[-1].id) if rows else Histories())

    in_flight: Future[Created] | None = None
    session.commit()  # the planner's own reads are done: nothing to keep open for minutes
    with (
        ChunkWriter(session, edition_id=edition.id, now=now) as writer,
        ChunkReader(session, read) as reader,
    ):
        upcoming = reader.submit(after_id=0)
        while True:
            rows, history = upcoming.result()
            if not rows:
                break
            upcoming = reader.submit(after_id=rows[-1].id)  # read while this one is picked
            report.considered += len(rows)
            due = [row for row in rows if planner.is_due(row.timezone, row.send_hour)]
            report.not_due += len(rows) - len(due)
            keys = planner.keys_for_rows(due, history)
            values = [(row.id, key) for row, key in zip(due, keys, strict=True)]
            chunk = writer.submit(planner.take_new_variants(), values)
            if in_flight is not None:
                published(in_flight)
            in_flight = chunk
        if in_flight is not None:
            published(in_flight)
    report.deliveries, report.variants = _counts(session, edition.id)
    return report


def _counts(session: Session, edition_id: int) -> tuple[int, int]:
    row = session.execute(
        select(func.count(), func.count(distinct(Delivery.variant_key))).where(
            Delivery.edition_id == edition_id
        )
    ).one()
    return int(row[0]), int(row[1])


@functools.lru_cache(maxsize=8)
def _format(raw: str) -> str:
    return MailFormat(raw).value  # ValueError for a value no form can store


# Decoded once per preference set the memo above misses, so bounded like it: readers type
# their topics, and with typed ones the values are as many as the preference sets (the
# bound was 65,536, eight times the memo's). Decoding one again costs a microsecond or two.
@functools.lru_cache(maxsize=PREFERENCES_REMEMBERED)
def _terms(raw: str | None) -> tuple[str, ...]:
    value = json.loads(raw) if raw else []
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def reader_selection(session: Session, *, edition: Edition, subscriber_id: int) -> Selection:
    """The papers (with why-lines) this subscriber's digest of ``edition`` would carry,
    exactly as planning chooses them (previews and test sends)."""
    row = reader_row(session, subscriber_id)
    if row is None:
        raise LookupError(f"no subscriber {subscriber_id}")
    planner = _Planner(session, edition, edition.created_at, due_only=False)
    ask = planner.ask_for_row(row, planner.history(session, subscriber_id, subscriber_id))
    return planner.picker.pick_many([ask])[0]
