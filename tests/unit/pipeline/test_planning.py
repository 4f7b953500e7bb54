"""Planning: due subscribers -> one ledger row each -> batches published after commit."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionItem,
    EditionKind,
    Feedback,
    FeedbackDirection,
    Frequency,
    MailFormat,
    Paper,
    Subscriber,
    SubscriberStatus,
    Variant,
)
from papermail.pipeline import planning
from papermail.pipeline.due_readers import PREFERENCES_FROM, READER_COLUMNS, ReaderRow
from papermail.pipeline.editions import build_edition
from papermail.pipeline.ingest import ingest_papers
from papermail.pipeline.planning import (
    last_send_slot,
    plan_edition,
    reader_selection,
)
from papermail.pipeline.redispatch import redispatch_due
from papermail.pipeline.selections import SelectionJson, variant_key
from papermail.sources.hf import load_sample
from tests.conftest import FIXED_NOW

DAY = dt.date(2026, 11, 27)  # the sample's papers were submitted on the 26th
BUILT_AT = dt.datetime(2026, 11, 27, 6, 0, 30, tzinfo=dt.UTC)
AFTER_BUILD = dt.datetime(2026, 11, 27, 23, 0, tzinfo=dt.UTC)  # every zone's hour has come
UTC = dt.UTC


def at(day: int, hour: int, minute: int = 0, *, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def edition(session: Session) -> Edition:
    ingest_papers(session, result=load_sample(), now=FIXED_NOW)
    result = build_edition(session, day=DAY, kind=EditionKind.DAILY, size=40)
    assert result.edition is not None
    result.edition.created_at = BUILT_AT
    session.commit()
    return result.edition


def subscriber(session: Session, email: str, **fields: Any) -> Subscriber:
    fields.setdefault("status", SubscriberStatus.ACTIVE)
    row = Subscriber(email=email, **fields)
    session.add(row)
    session.commit()
    return row


class Published:
    """A publish callback that records the batches it was handed."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, ids: list[int]) -> None:
        self.batches.append(list(ids))

    @property
    def ids(self) -> list[int]:
        return [i for batch in self.batches for i in batch]


def plan(session: Session, edition: Edition, **kwargs: Any) -> tuple[Any, Published]:
    published = Published()
    kwargs.setdefault("now", AFTER_BUILD)
    kwargs.setdefault("batch_size", 100)
    kwargs.setdefault("due_only", False)
    report = plan_edition(session, edition=edition, publish=published, **kwargs)
    return report, published


def deliveries(session: Session) -> list[Delivery]:
    session.expire_all()
    return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def planned_subscribers(session: Session) -> set[int]:
    return {d.subscriber_id for d in deliveries(session)}


# --- who is planned -----------------------------------------------------------------------


def test_plans_only_active_subscribers_of_the_editions_frequency(
    session: Session, edition: Edition
) -> None:
    active = subscriber(session, "active@example.org")
    subscriber(session, "pending@example.org", status=SubscriberStatus.PENDING)
    subscriber(session, "gone@example.org", status=SubscriberStatus.UNSUBSCRIBED)
    subscriber(session, "bounced@example.org", status=SubscriberStatus.SUPPRESSED)
    subscriber(session, "weekly@example.org", frequency=Frequency.WEEKLY)
    report, published = plan(session, edition)
    assert planned_subscribers(session) == {active.id}
    assert report.planned == 1 and report.considered == 1
    assert published.ids == [d.id for d in deliveries(session)]


def test_weekly_edition_plans_weekly_subscribers(session: Session, edition: Edition) -> None:
    weekly_edition = build_edition(session, day=DAY, kind=EditionKind.WEEKLY, size=10).edition
    assert weekly_edition is not None
    subscriber(session, "daily@example.org")
    weekly = subscriber(session, "weekly@example.org", frequency=Frequency.WEEKLY)
    plan(session, weekly_edition)
    assert planned_subscribers(session) == {weekly.id}


def test_new_rows_are_pending_and_marked_dispatched(session: Session, edition: Edition) -> None:
    subscriber(session, "a@example.org")
    plan(session, edition, now=AFTER_BUILD)
    [row] = deliveries(session)
    assert row.status is DeliveryStatus.PENDING
    assert row.attempts == 0
    assert row.edition_id == edition.id
    assert row.dispatched_at == AFTER_BUILD


def test_replanning_plans_nothing_and_publishes_nothing(session: Session, edition: Edition) -> None:
    for i in range(3):
        subscriber(session, f"s{i}@example.org")
    first, published = plan(session, edition)
    assert first.planned == 3
    again, republished = plan(session, edition, now=AFTER_BUILD + dt.timedelta(hours=1))
    assert again.planned == 0
    assert again.batches == 0
    assert republished.batches == []
    assert len(deliveries(session)) == 3


def test_replanning_adds_only_new_subscribers(session: Session, edition: Edition) -> None:
    subscriber(session, "early@example.org")
    plan(session, edition)
    late = subscriber(session, "late@example.org")
    report, published = plan(session, edition)
    assert report.planned == 1
    [row] = [d for d in deliveries(session) if d.id in published.ids]
    assert row.subscriber_id == late.id


def test_only_subscribers_limits_planning(session: Session, edition: Edition) -> None:
    subs = [subscriber(session, f"s{i}@example.org") for i in range(4)]
    plan(session, edition, only_subscribers=[subs[1].id, subs[3].id])
    assert planned_subscribers(session) == {subs[1].id, subs[3].id}


# --- batches and commits ------------------------------------------------------------------


def test_batches_hold_batch_size_ids_in_id_order(session: Session, edition: Edition) -> None:
    for i in range(7):  # one shared variant
        subscriber(session, f"s{i}@example.org")
    report, published = plan(session, edition, batch_size=3)
    all_ids = [d.id for d in deliveries(session)]
    assert published.batches == [all_ids[0:3], all_ids[3:6], all_ids[6:7]]
    assert report.batches == 3
    assert report.planned == 7


def test_every_row_is_published_once_whatever_the_variants(
    session: Session, edition: Edition
) -> None:
    topics = (["video"], ["robotics"], [], ["diffusion"])
    for i in range(11):
        subscriber(session, f"s{i}@example.org", topics=topics[i % 4])
    report, published = plan(session, edition, batch_size=3)
    assert sorted(published.ids) == [d.id for d in deliveries(session)]
    assert all(0 < len(batch) <= 3 for batch in published.batches)
    assert report.batches == len(published.batches) == 4


def test_publish_happens_after_commit(
    session: Session, edition: Edition, session_factory: sessionmaker[Session]
) -> None:
    for i in range(5):
        subscriber(session, f"s{i}@example.org")
    seen: list[list[tuple[int, DeliveryStatus]]] = []

    def publish(ids: list[int]) -> None:
        # A worker's own session must already find every row the task names.
        with session_factory() as other:
            rows = other.execute(
                select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids))
            ).all()
        seen.append(sorted((row.id, row.status) for row in rows))
        assert [row_id for row_id, _status in seen[-1]] == sorted(ids)

    plan_edition(
        session, edition=edition, now=AFTER_BUILD, batch_size=2, publish=publish, due_only=False
    )
    assert [len(batch) for batch in seen] == [2, 2, 1]
    assert all(status is DeliveryStatus.PENDING for batch in seen for _id, status in batch)


def test_chunks_cover_everyone_once_and_batches_never_span_chunks(
    session: Session, edition: Edition
) -> None:
    subs = [subscriber(session, f"s{i}@example.org") for i in range(7)]
    report, published = plan(session, edition, batch_size=2, chunk_size=3)
    rows = deliveries(session)
    by_subscriber = {d.subscriber_id: d.id for d in rows}
    assert sorted(by_subscriber) == [s.id for s in subs]
    chunk_ids = [[by_subscriber[s.id] for s in subs[i : i + 3]] for i in (0, 3, 6)]
    assert published.batches == [
        chunk_ids[0][:2],
        chunk_ids[0][2:],
        chunk_ids[1][:2],
        chunk_ids[1][2:],
        chunk_ids[2],
    ]
    assert report.considered == 7
    assert report.planned == 7


def test_a_chunk_with_nobody_due_does_not_stop_planning(session: Session, edition: Edition) -> None:
    # Ids 1-3 are not due yet (New York, 07:00 local = 12:00 UTC); 4-5 are.
    for i in range(3):
        subscriber(session, f"ny{i}@example.org", timezone="America/New_York", send_hour=7)
    due = [subscriber(session, f"utc{i}@example.org", send_hour=7) for i in range(2)]
    report, _published = plan(session, edition, now=at(27, 8), chunk_size=3, due_only=True)
    assert planned_subscribers(session) == {s.id for s in due}
    assert report.not_due == 3
    assert report.considered == 5


def test_chunk_size_at_an_exact_multiple(session: Session, edition: Edition) -> None:
    for i in range(6):
        subscriber(session, f"s{i}@example.org")
    report, published = plan(session, edition, batch_size=10, chunk_size=3)
    assert report.planned == 6
    assert [len(b) for b in published.batches] == [3, 3]


# --- variants -----------------------------------------------------------------------------


def keys_by_email(session: Session) -> dict[str, str]:
    session.expire_all()
    return dict(
        session.execute(
            select(Subscriber.email, Delivery.variant_key).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    )


def test_same_preferences_share_one_variant(session: Session, edition: Edition) -> None:
    for i in range(4):
        subscriber(session, f"twin{i}@example.org", topics=["diffusion"], max_papers=5)
    report, _ = plan(session, edition)
    assert len(set(keys_by_email(session).values())) == 1
    assert report.variants == 1
    assert len(list(session.scalars(select(Variant)))) == 1


def test_different_preferences_get_different_variants(session: Session, edition: Edition) -> None:
    subscriber(session, "plain@example.org")
    subscriber(session, "short@example.org", max_papers=3)
    subscriber(session, "text@example.org", format=MailFormat.TEXT)
    subscriber(session, "robots@example.org", topics=["robotic manipulation"])
    subscriber(session, "meta@example.org", follow_organizations=["AI at Meta"])
    report, _ = plan(session, edition)
    keys = keys_by_email(session)
    assert len(set(keys.values())) == 5
    assert report.variants == len(set(keys.values())) and report.distinct_share == 1.0


def test_preferences_that_pick_the_same_papers_share_a_variant(
    session: Session, edition: Edition
) -> None:
    subscriber(session, "plain@example.org")
    subscriber(session, "nomatch@example.org", topics=["zyxwvut"])  # no paper says it
    plan(session, edition)
    keys = keys_by_email(session)
    assert keys["plain@example.org"] == keys["nomatch@example.org"]


def test_variant_row_holds_the_selection_with_reasons(session: Session, edition: Edition) -> None:
    subscriber(session, "robots@example.org", topics=["robotic manipulation"], max_papers=3)
    plan(session, edition)
    [variant] = session.scalars(select(Variant))
    assert variant.edition_id == edition.id
    assert variant.format is MailFormat.HTML
    assert len(variant.selection) == 3
    picks = dict(variant.selection)
    # "Data Scaling Laws in Imitation Learning for Robotic Manipulation": it says the topic.
    assert picks["2611.14797"] == "Matches your topic \u201crobotic manipulation\u201d"
    for reason in picks.values():
        assert reason.startswith(("Matches your topic", "Related to your topic", "#")), reason


def test_a_trending_pick_says_its_rank_and_votes(session: Session, edition: Edition) -> None:
    subscriber(session, "plain@example.org", max_papers=2)
    plan(session, edition)
    [variant] = session.scalars(select(Variant))
    assert [reason for _pid, reason in variant.selection] == [
        "#1 trending \u00b7 250 upvotes",
        "#2 trending \u00b7 212 upvotes",
    ]


def test_planning_selects_what_a_subscribers_interests_select(
    session: Session, edition: Edition
) -> None:
    # Preview maps a Subscriber with Interests.of; planning maps raw rows with the same
    # function. Both must pick the same papers, for the same reasons, in the same order.
    ada = subscriber(
        session,
        "ada@example.org",
        max_papers=6,
        topics=["robotic manipulation"],
        follow_organizations=["Google DeepMind"],
        follow_authors=["Felix Costa"],
    )
    plan(session, edition)
    [variant] = session.scalars(select(Variant))
    expected = reader_selection(session, edition=edition, subscriber_id=ada.id)
    assert [tuple(pair) for pair in variant.selection] == list(expected)
    # Every field counted: a followed organisation, a followed author, a topic.
    assert {reason.split()[0] for _pid, reason in expected} >= {"From", "By", "Matches"}


# Strings the way upstream titles can be: quotes, backslashes, control characters, and
# commas and brackets that would make two selections one if they were merely joined.
AWKWARD = (
    ("2501.00001", 'Similar to “A "quoted" \\ title\n”, which you liked'),
    ("2501.00002", "Matches your topic “nul\x00byte”"),
    ("2501.00003", '"],["2501.00004","#4 trending'),
)


def test_a_selection_is_its_json_and_its_key_tells_selections_apart() -> None:
    encode = SelectionJson(limit=2)  # fewer than the picks: the memo is cleared on the way

    text = encode(AWKWARD)

    assert json.loads(text) == [list(pick) for pick in AWKWARD]
    assert encode(AWKWARD) == text  # the memo gives the same text as a first encoding
    key = variant_key(7, "html", text)
    assert len(key) == 32 and key == variant_key(7, "html", encode(AWKWARD))
    merged = (("2501.00003", ""), ("2501.00004", "#4 trending"))  # what a join would blur
    others = {
        variant_key(8, "html", text),
        variant_key(7, "text", text),
        variant_key(7, "html", encode(AWKWARD[:2])),
        variant_key(7, "html", encode(AWKWARD[::-1])),
        variant_key(7, "html", encode(AWKWARD[:2] + merged)),
    }
    assert key not in others and len(others) == 5


def test_variant_keys_are_stable_across_planning_runs(session: Session, edition: Edition) -> None:
    subscriber(session, "first@example.org", topics=["video"])
    plan(session, edition)
    subscriber(session, "second@example.org", topics=["video"])
    plan(session, edition)
    keys = keys_by_email(session)
    assert keys["first@example.org"] == keys["second@example.org"]


def test_bounded_preference_memos_start_over_and_plan_the_same(
    session: Session, edition: Edition, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its bound a memo of decoded preferences (and of shared readers' keys) starts
    over: readers typing ever new topics cannot grow a planner's memory, and every reader
    still gets the key of their own selection."""
    typed = [["video"], ["robotics", "agents"], [], ["diffusion"], ["code"], ["speech"]]
    for n in range(36):
        subscriber(
            session,
            f"r{n}@example.org",
            topics=typed[n % len(typed)],
            max_papers=(5, 10)[(n // 6) % 2],
            format=MailFormat.TEXT if n % 3 == 0 else MailFormat.HTML,
        )
    plan(session, edition)
    unbounded = keys_by_email(session)
    session.execute(delete(Delivery))
    session.commit()
    monkeypatch.setattr(planning, "PREFERENCES_REMEMBERED", 2)
    monkeypatch.setattr(planning, "KEYS_REMEMBERED", 3)
    sizes: list[tuple[int, int]] = []
    pick_for = planning._Planner.keys_for_rows

    def watched(self: Any, rows: Any, history: Any) -> list[str]:
        keys = pick_for(self, rows, history)
        sizes.append((len(self._readers), len(self._keys)))
        return keys

    monkeypatch.setattr(planning._Planner, "keys_for_rows", watched)

    plan(session, edition, chunk_size=4)

    assert keys_by_email(session) == unbounded
    assert len(set(unbounded.values())) == 12  # readers who state the same share a key
    assert sizes
    assert max(decoded for decoded, _ in sizes) <= 2
    assert max(keys for _, keys in sizes) <= 3


# --- due-only: local send hours -----------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "zone", "hour", "expected"),
    [
        (at(26, 8, 30), "UTC", 7, at(26, 7)),
        (at(26, 7), "UTC", 7, at(26, 7)),  # the hour itself counts
        (at(26, 6, 59), "UTC", 7, at(25, 7)),
        (at(26, 0, 5), "UTC", 0, at(26, 0)),
        (at(26, 6, 30), "Europe/Paris", 7, at(26, 6)),  # CET, +1
        (at(26, 5, 30), "Europe/Paris", 7, at(25, 6)),
        # Tokyo (+9) is already on the 27th; its 07:00 was on the 26th, UTC 22:00 of the 25th.
        (at(26, 20), "Asia/Tokyo", 7, at(25, 22)),
        # Los Angeles (-8) is still on the 25th at 22:00.
        (at(26, 6), "America/Los_Angeles", 23, at(25, 7)),
        (at(26, 12), "Asia/Kolkata", 17, at(26, 11, 30)),  # +5:30
        # New York springs forward on 8 March 2026: 08:00 EDT is 12:00 UTC, the day before
        # 08:00 EST was 13:00 UTC.
        (at(8, 13, month=3), "America/New_York", 8, at(8, 12, month=3)),
        (at(8, 11, 30, month=3), "America/New_York", 8, at(7, 13, month=3)),
        (at(9, 11, 30, month=3), "America/New_York", 8, at(8, 12, month=3)),
        # Paris falls back on 25 October 2026: 02:00 happens twice, the latest one counts.
        (at(25, 0, 30, month=10), "Europe/Paris", 2, at(25, 0, month=10)),
        (at(25, 1, 30, month=10), "Europe/Paris", 2, at(25, 1, month=10)),
        (at(25, 5, 30, month=10), "Europe/Paris", 7, at(24, 5, month=10)),
        (at(25, 6, 30, month=10), "Europe/Paris", 7, at(25, 6, month=10)),
    ],
)
def test_last_send_slot(now: dt.datetime, zone: str, hour: int, expected: dt.datetime) -> None:
    assert last_send_slot(now, timezone=zone, send_hour=hour) == expected


def test_a_send_hour_skipped_by_dst_fires_at_the_first_instant_after() -> None:
    # 02:00 does not exist in New York on 8 March 2026; 03:00 EDT (07:00 UTC) follows 01:59 EST.
    now = at(8, 9, month=3)
    assert last_send_slot(now, timezone="America/New_York", send_hour=2) == at(8, 7, month=3)
    assert last_send_slot(at(8, 6, 59, month=3), timezone="America/New_York", send_hour=2) == (
        at(7, 7, month=3)
    )


def test_unknown_timezone_is_treated_as_utc() -> None:
    assert last_send_slot(at(26, 9), timezone="Mars/Olympus_Mons", send_hour=7) == at(26, 7)


_ZONES = (
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/St_Johns",
    "Pacific/Kiritimati",
    "Pacific/Niue",
)


def _wall_clock_exists(day: dt.date, hour: int, zone: ZoneInfo) -> bool:
    wall = dt.datetime.combine(day, dt.time(hour), tzinfo=zone)
    return wall.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None)


def test_last_send_slot_properties_over_a_year_of_instants() -> None:
    rng = random.Random(20261126)
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(3000):
        now = start + dt.timedelta(seconds=rng.randrange(366 * 24 * 3600))
        name, hour = rng.choice(_ZONES), rng.randrange(24)
        zone = ZoneInfo(name)
        slot = last_send_slot(now, timezone=name, send_hour=hour)
        context = f"{now=} {name=} {hour=} {slot=}"
        assert slot.tzinfo is not None and slot.utcoffset() == dt.timedelta(0), context
        assert slot <= now, context
        assert now - slot < dt.timedelta(hours=25), context
        local = slot.astimezone(zone)
        if _wall_clock_exists(local.date(), hour, zone):
            assert (local.hour, local.minute, local.second) == (hour, 0, 0), context
        # The slot is a fixed point: asking again at the slot gives the slot.
        assert last_send_slot(slot, timezone=name, send_hour=hour) == slot, context


def test_not_planned_before_their_local_send_hour(session: Session, edition: Edition) -> None:
    subscriber(session, "nine@example.org", send_hour=9)
    report, published = plan(session, edition, now=at(27, 8, 59), due_only=True)
    assert report.planned == 0 and report.not_due == 1
    assert published.batches == []
    assert deliveries(session) == []


def test_planned_once_their_local_send_hour_has_come(session: Session, edition: Edition) -> None:
    nine = subscriber(session, "nine@example.org", send_hour=9)
    plan(session, edition, now=at(27, 8, 59), due_only=True)
    report, published = plan(session, edition, now=at(27, 9), due_only=True)
    assert report.planned == 1 and report.not_due == 0
    assert planned_subscribers(session) == {nine.id}
    assert len(published.ids) == 1


def test_due_depends_on_the_subscribers_timezone(session: Session, edition: Edition) -> None:
    paris = subscriber(session, "paris@example.org", timezone="Europe/Paris", send_hour=7)
    new_york = subscriber(session, "ny@example.org", timezone="America/New_York", send_hour=7)
    tokyo = subscriber(session, "tokyo@example.org", timezone="Asia/Tokyo", send_hour=7)
    plan(session, edition, now=at(27, 6, 30), due_only=True)  # 07:30 in Paris
    assert planned_subscribers(session) == {paris.id}
    plan(session, edition, now=at(27, 12), due_only=True)  # 07:00 in New York
    assert planned_subscribers(session) == {paris.id, new_york.id}
    # Tokyo's 07:00 on the 27th came before the edition existed: they get it next morning,
    # at 22:00 UTC on the 27th.
    plan(session, edition, now=at(27, 21, 59), due_only=True)
    assert tokyo.id not in planned_subscribers(session)
    plan(session, edition, now=at(27, 22), due_only=True)
    assert tokyo.id in planned_subscribers(session)


def test_subscriber_whose_send_hour_is_the_build_hour_gets_it_that_day(
    session: Session, edition: Edition
) -> None:
    # The edition is built at 06:00:30; planning runs at 06:05. Someone who reads at 06:00
    # must not wait a whole day for today's papers.
    six = subscriber(session, "six@example.org", send_hour=6)
    plan(session, edition, now=at(27, 6, 5), due_only=True)
    assert planned_subscribers(session) == {six.id}


def test_due_only_false_plans_everyone_now(session: Session, edition: Edition) -> None:
    subscriber(session, "late@example.org", send_hour=23)
    report, _ = plan(session, edition, now=at(27, 6, 5), due_only=False)
    assert report.planned == 1


# --- redispatch ---------------------------------------------------------------------------

NOW = at(27, 12)
STALE = dt.timedelta(minutes=15)


def rows_in_states(
    session: Session, edition: Edition, states: dict[str, dict[str, Any]]
) -> dict[str, int]:
    names = list(states)
    for name in names:
        subscriber(session, f"{name}@example.org")
    plan(session, edition, now=NOW - dt.timedelta(hours=1))
    ids = {}
    for name in names:
        row_id = session.scalar(
            select(Delivery.id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email == f"{name}@example.org")
        )
        assert row_id is not None
        session.execute(update(Delivery).where(Delivery.id == row_id).values(**states[name]))
        ids[name] = row_id
    session.commit()
    return ids


def test_redispatch_picks_due_retries_expired_leases_and_stale_dispatches(
    session: Session, edition: Edition
) -> None:
    minute = dt.timedelta(minutes=1)
    ids = rows_in_states(
        session,
        edition,
        {
            "queued_recently": {"status": "pending", "dispatched_at": NOW - minute},
            "queued_long_ago": {"status": "pending", "dispatched_at": NOW - STALE - minute},
            "released": {"status": "pending", "dispatched_at": None},
            "retry_due": {
                "status": "retry",
                "next_attempt_at": NOW - minute,
                "dispatched_at": None,
            },
            "retry_due_now": {"status": "retry", "next_attempt_at": NOW, "dispatched_at": None},
            "retry_later": {
                "status": "retry",
                "next_attempt_at": NOW + minute,
                "dispatched_at": None,
            },
            "lease_expired": {
                "status": "sending",
                "lease_until": NOW - minute,
                "dispatched_at": None,
            },
            "lease_live": {"status": "sending", "lease_until": NOW + minute, "dispatched_at": None},
            "sent": {"status": "sent", "dispatched_at": None},
            "failed": {"status": "failed", "dispatched_at": None},
            "skipped": {"status": "skipped", "dispatched_at": None},
        },
    )
    published = Published()
    count = redispatch_due(session, now=NOW, batch_size=100, publish=published, stale_after=STALE)
    expected = sorted(
        ids[n]
        for n in ("queued_long_ago", "released", "retry_due", "retry_due_now", "lease_expired")
    )
    assert published.ids == expected
    assert count == len(expected)


def test_redispatch_marks_rows_so_the_next_sweep_skips_them(
    session: Session, edition: Edition, session_factory: sessionmaker[Session]
) -> None:
    ids = rows_in_states(
        session, edition, {"a": {"dispatched_at": None}, "b": {"dispatched_at": None}}
    )
    seen_committed: list[set[Any]] = []

    def publish(batch: list[int]) -> None:
        with session_factory() as other:
            seen_committed.append(
                set(other.scalars(select(Delivery.dispatched_at).where(Delivery.id.in_(batch))))
            )

    redispatch_due(session, now=NOW, batch_size=100, publish=publish, stale_after=STALE)
    assert seen_committed == [{NOW}]
    again = Published()
    later = NOW + dt.timedelta(minutes=5)
    assert redispatch_due(session, now=later, batch_size=100, publish=again) == 0
    assert again.batches == []
    # Once the mark goes stale (the task was lost), the rows are queued again.
    much_later = NOW + STALE + dt.timedelta(minutes=1)
    assert redispatch_due(session, now=much_later, batch_size=100, publish=again) == 2
    assert again.ids == sorted(ids.values())


def test_redispatch_publishes_in_batches(session: Session, edition: Edition) -> None:
    ids = rows_in_states(session, edition, {f"s{i}": {"dispatched_at": None} for i in range(5)})
    published = Published()
    redispatch_due(session, now=NOW, batch_size=2, publish=published)
    ordered = sorted(ids.values())
    assert published.batches == [ordered[0:2], ordered[2:4], ordered[4:5]]


def test_redispatch_with_nothing_to_do_publishes_nothing(
    session: Session, edition: Edition
) -> None:
    subscriber(session, "a@example.org")
    plan(session, edition, now=NOW)
    published = Published()
    assert redispatch_due(session, now=NOW, batch_size=10, publish=published) == 0
    assert published.batches == []


def test_the_edition_is_prepared_once_committed_and_before_any_batch(
    session: Session, edition: Edition, session_factory: sessionmaker[Session]
) -> None:
    # The planner renders the edition there, so no send batch has to render it itself.
    subscriber(session, "a@example.org", topics=["diffusion"])
    subscriber(session, "b@example.org")
    events: list[tuple[str, object]] = []

    def prepare() -> None:
        with session_factory() as other:  # committed: another session sees the rows
            found = other.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.edition_id == edition.id)
            )
        events.append(("prepare", found))

    report = plan_edition(
        session,
        edition=edition,
        now=AFTER_BUILD,
        batch_size=1,
        due_only=False,
        publish=lambda ids: events.append(("batch", list(ids))),
        prepare=prepare,
    )
    assert [kind for kind, _ in events] == ["prepare", "batch", "batch"]
    assert events[0][1] == 2
    assert (report.deliveries, report.variants) == (2, 2)
    replan = plan_edition(
        session,
        edition=edition,
        now=AFTER_BUILD,
        batch_size=100,
        due_only=False,
        publish=lambda ids: events.append(("batch", list(ids))),
        prepare=prepare,
    )
    assert replan.planned == 0 and len(events) == 3  # nothing new: not called again


# --- arXiv categories ---------------------------------------------------------------------


def _label_pool(session: Session, edition: Edition) -> dict[str, str]:
    """Half the edition's papers cs.CV, half cs.RO, whatever their words say."""
    ids = list(
        session.scalars(
            select(EditionItem.paper_id)
            .where(EditionItem.edition_id == edition.id)
            .order_by(EditionItem.rank)
        )
    )
    field = {pid: ("cs.CV" if i % 2 else "cs.RO") for i, pid in enumerate(ids)}
    for paper in session.scalars(select(Paper).where(Paper.id.in_(ids))):
        paper.categories = [field[paper.id], "cs.LG"]
    session.commit()
    return field


def test_liking_a_fields_papers_fills_the_next_digest_with_that_field(
    session: Session, edition: Edition
) -> None:
    field = _label_pool(session, edition)
    reader = subscriber(session, "cv@example.org", relevance_weight=1.0)
    liked = [pid for pid, code in field.items() if code == "cs.CV"][:3]
    for minute, pid in enumerate(liked):
        session.add(
            Feedback(
                subscriber_id=reader.id,
                paper_id=pid,
                direction=FeedbackDirection.MORE,
                created_at=AFTER_BUILD - dt.timedelta(hours=2, minutes=-minute),
            )
        )
    session.commit()

    def cv_share() -> int:
        picks = reader_selection(session, edition=edition, subscriber_id=reader.id)
        return sum(field[pid] == "cs.CV" for pid, _reason in picks)

    described = cv_share()
    for paper in session.scalars(select(Paper)):
        paper.categories = []
    session.commit()
    words_only = cv_share()

    # The three liked papers are never sent again; of the ten others, the field fills them.
    assert described >= 9
    assert described > words_only


def test_a_reader_row_names_the_columns_planning_reads_in_their_order() -> None:
    # Rows are made positionally (ReaderRow._make): a column added or moved on one side
    # only would hand the planner one preference under another's name.
    assert ReaderRow._fields == tuple(select(*READER_COLUMNS).selected_columns.keys())
    assert ReaderRow._fields[PREFERENCES_FROM] == "max_papers"
