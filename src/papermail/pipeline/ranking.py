"""Trending score and per-subscriber selection. Pure functions, no I/O.

Hugging Face publishes no vote history, so papermail keeps its own snapshots
and ranks like Hacker News: votes decay with age, ``(P - 1) / (T + 2) ** 1.8``.
Velocity (votes per hour between recent snapshots) adds the votes a paper is
on course to gain in the next few hours, so a fast riser beats a stale leader.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

GRAVITY = 1.8
VELOCITY_HORIZON_HOURS = 6.0  # velocity counts as the votes expected over this many hours
VELOCITY_WINDOW = dt.timedelta(hours=6)
MIN_VELOCITY_SPAN = dt.timedelta(minutes=10)  # closer snapshots are noise


@dataclass(frozen=True, slots=True)
class Snapshot:
    observed_at: dt.datetime
    upvotes: int


@dataclass(frozen=True, slots=True)
class PaperSignals:
    paper_id: str
    upvotes: int
    num_comments: int
    github_stars: int
    submitted_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Scored:
    paper_id: str
    score: float


def velocity(snapshots: Sequence[Snapshot], *, now: dt.datetime) -> float:
    """Upvotes per hour across the recent window; 0 when history is too short."""
    recent = sorted(
        (s for s in snapshots if now - VELOCITY_WINDOW <= s.observed_at <= now),
        key=lambda s: s.observed_at,
    )
    if len(recent) < 2:
        return 0.0
    first, last = recent[0], recent[-1]
    span = last.observed_at - first.observed_at
    if span < MIN_VELOCITY_SPAN:
        return 0.0
    return max(0, last.upvotes - first.upvotes) / (span.total_seconds() / 3600)


def trending_score(
    signals: PaperSignals, *, now: dt.datetime, votes_per_hour: float = 0.0
) -> float:
    age_hours = 0.0
    if signals.submitted_at is not None:
        age_hours = max(0.0, (now - signals.submitted_at).total_seconds() / 3600)
    points = max(0, signals.upvotes - 1) + votes_per_hour * VELOCITY_HORIZON_HOURS
    return points / (age_hours + 2) ** GRAVITY


def rank(
    papers: Iterable[PaperSignals],
    *,
    now: dt.datetime,
    velocities: dict[str, float] | None = None,
    limit: int | None = None,
) -> list[Scored]:
    """Best first; ties by comments, then GitHub stars, then id for a stable order."""
    velocities = velocities or {}
    scored = [
        (trending_score(p, now=now, votes_per_hour=velocities.get(p.paper_id, 0.0)), p)
        for p in papers
    ]
    scored.sort(
        key=lambda sp: (-round(sp[0], 9), -sp[1].num_comments, -sp[1].github_stars, sp[1].paper_id)
    )
    chosen = scored if limit is None else scored[:limit]
    return [Scored(paper_id=p.paper_id, score=score) for score, p in chosen]


# --- per-subscriber selection -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A ranked paper of an edition, with the text interests are matched against."""

    paper_id: str
    rank: int
    title: str
    summary: str
    keywords: tuple[str, ...]
    organization: str | None
    authors: tuple[str, ...]


class Choices(Protocol):
    """What a selection is made from: a Subscriber, their Preferences, a planning row."""

    @property
    def max_papers(self) -> int: ...
    @property
    def topics(self) -> Any: ...
    @property
    def follow_organizations(self) -> Any: ...
    @property
    def follow_authors(self) -> Any: ...


def _as_terms(value: Any) -> Iterable[str]:
    return value or ()


@dataclass(frozen=True, slots=True)
class Interests:
    """The part of a subscriber's preferences their selection depends on (same field names).

    Build it with :meth:`of`; a plain frozen dataclass, so planning can make one per
    distinct row of a million-subscriber run and use it as a memo key.
    """

    max_papers: int
    topics: tuple[str, ...] = ()
    follow_organizations: tuple[str, ...] = ()
    follow_authors: tuple[str, ...] = ()

    @classmethod
    def of(cls, chosen: Choices, *, terms: Callable[[Any], Iterable[str]] = _as_terms) -> Interests:
        """The one mapping from a subscriber's choices to what :func:`select` reads.

        ``terms`` reads a stored term list: the default takes lists (or None) as they
        are; planning passes its JSON decoder for the raw text it selects.
        """
        return cls(
            max_papers=chosen.max_papers,
            topics=tuple(terms(chosen.topics)),
            follow_organizations=tuple(terms(chosen.follow_organizations)),
            follow_authors=tuple(terms(chosen.follow_authors)),
        )


def name_key(name: str) -> str:
    """How a muted name is compared with a paper's: case and spacing do not matter."""
    return " ".join(name.split()).casefold()


@dataclass(frozen=True, slots=True)
class Muted:
    """Authors and organisations a reader muted from a digest card: a paper by any of
    them is never selected, followed or not. Not a preference (the form does not set it),
    so not part of :class:`Interests`; a frozen value too, and a memo key beside it.

    Holds comparison keys (:func:`name_key`), so the order names were muted in and how
    they were written do not make two readers' selections differ.
    """

    authors: frozenset[str] = frozenset()
    organizations: frozenset[str] = frozenset()

    @classmethod
    def of(cls, chosen: Any, *, terms: Callable[[Any], Iterable[str]] = _as_terms) -> Muted:
        """What a Subscriber or a planning row muted (``muted_authors``,
        ``muted_organizations``); ``terms`` as for :meth:`Interests.of`."""
        return cls(
            authors=frozenset(map(name_key, terms(chosen.muted_authors))) - {""},
            organizations=frozenset(map(name_key, terms(chosen.muted_organizations))) - {""},
        )

    def __bool__(self) -> bool:
        return bool(self.authors or self.organizations)

    def excludes(self, candidate: Candidate) -> bool:
        if candidate.organization and name_key(candidate.organization) in self.organizations:
            return True
        return bool(self.authors) and any(name_key(a) in self.authors for a in candidate.authors)


NOBODY_MUTED = Muted()

Selection = tuple[tuple[str, str], ...]  # ((paper_id, reason), ...) in email order


def _topic_pattern(topic: str) -> re.Pattern[str]:
    # Whole words, case-insensitive: "rl" must not match "world".
    words = r"\s+".join(re.escape(w) for w in topic.split())
    return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)


def _matches(candidate: Candidate, pattern: re.Pattern[str]) -> bool:
    haystacks = (candidate.title, " · ".join(candidate.keywords), candidate.summary)
    return any(pattern.search(text) for text in haystacks)


class TopicIndex:
    """Which candidates match a topic, worked out once per topic per edition.

    Planning a million subscribers asks the same few hundred topics again and
    again; the regex work is done the first time only.
    """

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self.candidates = candidates
        self._matching: dict[str, frozenset[str]] = {}

    def matching(self, topic: str) -> frozenset[str]:
        key = topic.casefold()
        if key not in self._matching:
            pattern = _topic_pattern(topic)
            self._matching[key] = frozenset(
                c.paper_id for c in self.candidates if _matches(c, pattern)
            )
        return self._matching[key]


def _follow_reason(candidate: Candidate, interests: Interests) -> str | None:
    org = candidate.organization or ""
    for wanted in interests.follow_organizations:
        # Whole words, like topics: following "Meta" must not pull in "Metaculus".
        if org and wanted.strip() and _topic_pattern(wanted).search(org):
            return f"From {candidate.organization}, which you follow"
    authors = {a.casefold(): a for a in candidate.authors}
    for wanted in interests.follow_authors:
        if wanted.casefold() in authors:
            return f"By {authors[wanted.casefold()]}, whom you follow"
    return None


def select(
    candidates: Sequence[Candidate],
    interests: Interests,
    *,
    index: TopicIndex | None = None,
    muted: Muted = NOBODY_MUTED,
) -> Selection:
    """Followed organisations/authors first, then topic matches, then the top trending.

    Topics boost rather than filter: a reader who follows "robotics" still gets
    a full digest on a day with one robotics paper. A paper by a muted author or
    organisation is never picked, whatever else it matches.
    """
    index = index or TopicIndex(candidates)
    topics = [(t, index.matching(t)) for t in interests.topics if t.strip()]
    followed: list[tuple[str, str]] = []
    matched: list[tuple[str, str]] = []
    rest: list[tuple[str, str]] = []
    for c in sorted(candidates, key=lambda c: c.rank):
        if muted and muted.excludes(c):
            continue
        if reason := _follow_reason(c, interests):
            followed.append((c.paper_id, reason))
        elif topic := next((t for t, ids in topics if c.paper_id in ids), None):
            matched.append((c.paper_id, f"Matches your topic \u201c{topic}\u201d"))
        else:
            rest.append((c.paper_id, f"#{c.rank} trending"))
    return tuple((followed + matched + rest)[: interests.max_papers])
