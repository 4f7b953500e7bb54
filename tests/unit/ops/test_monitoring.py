"""monitoring, broker, history and phrasing: every figure the CLI, /ops and /metrics
show, on SQLite + fakeredis.

Ledger rows come from tests.support.ledger's ``seed_*`` helpers (chosen timestamps).
"""

from __future__ import annotations

import datetime as dt
import json

import fakeredis
import pytest
import redis as redis_lib
from kombu.transport import redis as kombu_redis
from redbeat.decoder import RedBeatJSONEncoder
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import (
    DeliveryStatus,
    SubscriberStatus,
)
from papermail.ops import broker, monitoring, phrasing
from papermail.ops import history as ops_history
from papermail.ops.broker import QueueDepth
from papermail.ops.jobs import recorded
from tests.conftest import FIXED_NOW
from tests.support.celery import FakeCelery
from tests.support.ledger import seed_delivery, seed_edition, seed_funnel, seed_subscriber

QUEUES = ("papermail.pipeline", "papermail.send")


# --- seeding (shared) -----------------------------------------------------------------------


def test_kombu_still_names_things_the_way_monitoring_reads_them() -> None:
    channel = kombu_redis.Channel
    assert channel.sep == broker.KOMBU_PRIORITY_SEP
    assert tuple(kombu_redis.PRIORITY_STEPS) == broker.KOMBU_PRIORITY_STEPS
    assert channel.unacked_key == broker.KOMBU_UNACKED_KEY


def test_queue_depth_sums_priority_sub_queues_and_counts_unacked_per_queue(
    redis: fakeredis.FakeRedis,
) -> None:
    redis.rpush("papermail.send", "a", "b")
    redis.rpush("papermail.send\x06\x163", "c")
    redis.rpush("papermail.send\x06\x169", "d")
    redis.rpush("papermail.pipeline", "e")
    redis.rpush("other.queue", "x", "y", "z")
    redis.hset(
        broker.KOMBU_UNACKED_KEY,
        "tag-1",
        json.dumps([{"body": "..."}, "papermail.send", "papermail.send"]),
    )
    redis.hset(
        broker.KOMBU_UNACKED_KEY,
        "tag-2",
        json.dumps([{"body": "..."}, "papermail.send", "papermail.send"]),
    )
    redis.hset(
        broker.KOMBU_UNACKED_KEY,
        "tag-3",
        json.dumps([{"body": "..."}, "papermail.pipeline", "papermail.pipeline"]),
    )

    depths = broker.queue_depths(redis, queues=QUEUES)

    assert depths == (
        QueueDepth(name="papermail.pipeline", ready=1, unacked=1),
        QueueDepth(name="papermail.send", ready=4, unacked=2),
    )


def test_a_damaged_unacked_entry_is_skipped(redis: fakeredis.FakeRedis) -> None:
    redis.hset(broker.KOMBU_UNACKED_KEY, "bad", "not json")
    redis.hset(
        broker.KOMBU_UNACKED_KEY, "good", json.dumps([{}, "papermail.send", "papermail.send"])
    )
    assert broker.unacked_counts(redis, queues=QUEUES) == {"papermail.send": 1}


def _redbeat_meta(when: dt.datetime) -> str:
    return json.dumps({"last_run_at": when, "total_run_count": 3}, cls=RedBeatJSONEncoder)


def test_beat_status_reads_the_lock_and_each_entrys_last_run(redis: fakeredis.FakeRedis) -> None:
    prefix = broker.REDBEAT_PREFIX
    # A beat that ticked 20 s ago extended the 150 s lock: 130 s remain.
    redis.set(f"{prefix}:lock", "token", px=130_000)
    for name, minutes in (("redispatch-due", 1), ("ingest-papers", 12)):
        key = f"{prefix}{name}"  # RedBeat joins prefix and name without a separator
        redis.hset(key, "meta", _redbeat_meta(FIXED_NOW - dt.timedelta(minutes=minutes)))
        redis.zadd(f"{prefix}:schedule", {key: 1.0})

    beat = broker.beat_status(redis, now=FIXED_NOW)

    assert beat.lock_held
    assert beat.last_tick is not None
    assert abs((FIXED_NOW - beat.last_tick).total_seconds() - 20) < 1
    assert beat.last_dispatch == FIXED_NOW - dt.timedelta(minutes=1)
    assert beat.entries["ingest-papers"] == FIXED_NOW - dt.timedelta(minutes=12)


def test_no_lock_means_no_beat(redis: fakeredis.FakeRedis) -> None:
    beat = broker.beat_status(redis, now=FIXED_NOW)
    assert not beat.lock_held and beat.last_tick is None and beat.last_dispatch is None


def test_workers_online_lists_whoever_answers_the_ping() -> None:
    app = FakeCelery(workers=("b@host", "a@host"))
    assert broker.workers_online(app, timeout=0.5) == ("a@host", "b@host")
    assert app.timeouts == [0.5]
    assert broker.workers_online(FakeCelery(workers=()), timeout=0.5) == ()


# --- database -------------------------------------------------------------------------------


def test_funnel_counts_todays_deliveries_and_splits_suppressed_from_skipped(
    session: Session,
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    seed_funnel(
        session,
        edition,
        {
            "pending": 3,
            "sending": 1,
            "sent": 5,
            "retry": 2,
            "failed": 1,
            "suppressed": 2,
            "skipped": 1,
        },
    )
    yesterday = FIXED_NOW - dt.timedelta(days=1)
    seed_funnel(session, edition, {"sent": 7}, created_at=yesterday)

    assert monitoring.funnel(session, day=FIXED_NOW.date()) == {
        "pending": 3,
        "sending": 1,
        "sent": 5,
        "retry": 2,
        "failed": 1,
        "suppressed": 2,
        "skipped": 1,
    }
    assert list(monitoring.funnel(session, day=FIXED_NOW.date())) == list(monitoring.FUNNEL)
    assert monitoring.funnel(session, day=yesterday.date())["sent"] == 7


def test_send_rate_is_messages_per_minute_over_the_window(session: Session) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    for minutes_ago in (1, 2, 3, 4, 30, 59, 61):
        seed_delivery(
            session,
            edition=edition,
            status=DeliveryStatus.SENT,
            sent_at=FIXED_NOW - dt.timedelta(minutes=minutes_ago),
        )
    session.commit()

    five = monitoring.send_rate(session, now=FIXED_NOW, window=dt.timedelta(minutes=5))
    hour = monitoring.send_rate(session, now=FIXED_NOW, window=dt.timedelta(minutes=60))

    assert five == pytest.approx(4 / 5)
    assert hour == pytest.approx(6 / 60)


def test_bounces_are_todays_permanent_failures_only(session: Session) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    seed_delivery(
        session,
        edition=edition,
        status=DeliveryStatus.FAILED,
        last_error="bounced: 550 5.1.1 no such user",
    )
    seed_delivery(
        session,
        edition=edition,
        status=DeliveryStatus.FAILED,
        last_error="gave up after 5 attempts: 451 try later",
    )
    session.commit()
    assert monitoring.bounces(session, day=FIXED_NOW.date()) == 1


def test_backlog_counts_every_edition_still_to_send(session: Session) -> None:
    old = seed_edition(session, day=FIXED_NOW.date() - dt.timedelta(days=3))
    seed_funnel(
        session,
        old,
        {"pending": 2, "retry": 1, "sent": 4},
        created_at=FIXED_NOW - dt.timedelta(days=3),
    )
    assert monitoring.backlog(session) == {"pending": 2, "retry": 1, "sending": 0}


def test_subscribers_by_status_names_every_status(session: Session) -> None:
    seed_subscriber(session)
    seed_subscriber(session)
    seed_subscriber(session, status=SubscriberStatus.UNSUBSCRIBED)
    session.commit()
    assert monitoring.subscribers_by_status(session) == {
        "pending": 0,
        "active": 2,
        "unsubscribed": 1,
        "suppressed": 0,
    }


def test_stage_runs_show_the_last_run_and_the_last_success(
    session_factory: sessionmaker[Session], session: Session
) -> None:
    times = iter(FIXED_NOW + dt.timedelta(minutes=m) for m in (0, 1, 10, 12))
    clock = lambda: next(times)  # noqa: E731
    with recorded(session_factory, stage="ingest", clock=clock) as detail:
        detail.update(fetched=40, inserted=3, updated=37, rejected=0)
    with pytest.raises(RuntimeError), recorded(session_factory, stage="ingest", clock=clock):
        raise RuntimeError("API answered 503")

    runs = {r.stage: r for r in monitoring.stage_runs(session)}

    ingest = runs["ingest"]
    assert ingest.ok is False
    assert ingest.duration_seconds == 120
    assert ingest.last_success_at == FIXED_NOW + dt.timedelta(minutes=1)
    assert "API answered 503" in phrasing.describe_run(ingest)
    assert runs["planning"].started_at is None
    assert phrasing.describe_run(runs["planning"]) == "never run"


def test_recent_editions_carry_counts_per_status(session: Session) -> None:
    older = seed_edition(session, day=FIXED_NOW.date() - dt.timedelta(days=1))
    newer = seed_edition(session, day=FIXED_NOW.date())
    seed_funnel(session, newer, {"sent": 2, "failed": 3})

    rows = monitoring.recent_editions(session)

    assert [r.id for r in rows] == [newer.id, older.id]
    assert rows[0].failed == 3 and rows[0].counts["sent"] == 2
    assert rows[1].counts == dict.fromkeys(monitoring.DELIVERY_STATUSES, 0)


# --- everything at once ---------------------------------------------------------------------


def test_snapshot_gathers_every_source(
    session_factory: sessionmaker[Session], redis: fakeredis.FakeRedis
) -> None:
    with session_factory() as session:
        edition = seed_edition(session, day=FIXED_NOW.date())
        seed_funnel(session, edition, {"sent": 2, "pending": 1})
    redis.rpush("papermail.send", "job")

    snap = monitoring.take_snapshot(
        sessions=session_factory, redis=redis, celery=FakeCelery(), queues=QUEUES, now=FIXED_NOW
    )

    assert snap.errors == ()
    assert snap.workers == ("w1@host",)
    assert snap.queues[1] == QueueDepth("papermail.send", ready=1, unacked=0)
    assert snap.funnel["sent"] == 2 and snap.backlog["pending"] == 1
    assert json.loads(json.dumps(snap.as_dict()))["queues"][1]["total"] == 1


def test_an_unreachable_redis_becomes_an_error_not_an_exception(
    session_factory: sessionmaker[Session],
) -> None:
    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)

    snap = monitoring.take_snapshot(
        sessions=session_factory, redis=dead, celery=None, queues=QUEUES, now=FIXED_NOW
    )

    assert not snap.source_up("redis") and snap.source_up("database")
    assert snap.queues == () and snap.beat is None
    assert snap.subscribers["active"] == 0  # the database figures still came through


# --- the last 24 hours ----------------------------------------------------------------------


def test_history_counts_sent_per_hour_and_failures_between_samples(
    session: Session, redis: fakeredis.FakeRedis
) -> None:
    edition = seed_edition(session, day=FIXED_NOW.date())
    for hours_ago, n in ((0, 2), (3, 5), (23, 1), (30, 9)):
        for _ in range(n):
            seed_delivery(
                session,
                edition=edition,
                status=DeliveryStatus.SENT,
                sent_at=FIXED_NOW - dt.timedelta(hours=hours_ago, minutes=-1),
            )
    session.commit()
    # failed-row count seen by the sampler: 0 -> 4 two hours ago, then an operator retry
    # (4 -> 1) must not count as negative failures, then 1 -> 3 in the current hour.
    for minutes_ago, failed in ((180, 0), (120, 4), (60, 1), (-10, 3)):
        ops_history.record_sample(
            redis,
            queues=[QueueDepth("papermail.send", minutes_ago, 0)],
            failed=failed,
            now=FIXED_NOW - dt.timedelta(minutes=minutes_ago),
        )

    history = ops_history.history(session, redis, now=FIXED_NOW + dt.timedelta(minutes=30))

    assert len(history.hours) == 24 and history.hours[-1] == FIXED_NOW
    assert history.sent[-1] == 2 and history.sent[-4] == 5 and history.sent[0] == 1
    assert sum(history.sent) == 8
    assert history.failed[-3] == 4 and history.failed[-1] == 2 and sum(history.failed) == 6
    assert [s.queues["papermail.send"] for s in history.queue_samples] == [180, 120, 60, -10]


def test_samples_are_spaced_and_trimmed(redis: fakeredis.FakeRedis) -> None:
    depth = [QueueDepth("papermail.send", 1, 0)]
    assert ops_history.record_sample(
        redis, queues=depth, failed=0, now=FIXED_NOW - dt.timedelta(hours=26)
    )
    assert ops_history.record_sample(redis, queues=depth, failed=0, now=FIXED_NOW)
    assert not ops_history.record_sample(
        redis, queues=depth, failed=0, now=FIXED_NOW + dt.timedelta(seconds=10)
    )
    samples = ops_history.read_samples(
        redis, since=FIXED_NOW - dt.timedelta(days=2), until=FIXED_NOW + dt.timedelta(hours=1)
    )
    assert [s.at for s in samples] == [FIXED_NOW]


def test_a_foreign_sample_member_is_ignored(redis: fakeredis.FakeRedis) -> None:
    redis.zadd(ops_history.SAMPLES_KEY, {"garbage": FIXED_NOW.timestamp()})
    assert (
        ops_history.read_samples(redis, since=FIXED_NOW - dt.timedelta(hours=1), until=FIXED_NOW)
        == ()
    )


def test_ago_reads_like_a_person_would_say_it() -> None:
    assert phrasing.ago(None, FIXED_NOW) == "never"
    assert phrasing.ago(FIXED_NOW - dt.timedelta(seconds=42), FIXED_NOW) == "42s ago"
    assert phrasing.ago(FIXED_NOW - dt.timedelta(minutes=90), FIXED_NOW) == "1h ago"
    assert phrasing.ago(FIXED_NOW + dt.timedelta(seconds=2), FIXED_NOW) == "just now"


def test_describe_pause_says_since_when_and_why() -> None:
    note = f"{(FIXED_NOW - dt.timedelta(minutes=2)).isoformat()} by ops"
    assert phrasing.describe_pause(note, FIXED_NOW) == "since 11:58 UTC (2m ago), by ops"
    assert phrasing.describe_pause(FIXED_NOW.isoformat(), FIXED_NOW) == "since 12:00 UTC (0s ago)"
    assert phrasing.describe_pause("not-a-time why", FIXED_NOW) == "not-a-time why"
    assert phrasing.describe_pause(None, FIXED_NOW) == ""
