"""metrics: the snapshot as Prometheus gauges, and send outcomes/latency from every worker."""

from __future__ import annotations

import datetime as dt
import math

import fakeredis
import pytest
import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families

from papermail.ops import metrics
from papermail.ops.broker import BeatStatus, QueueDepth
from papermail.ops.metrics import SendTally
from papermail.ops.monitoring import Snapshot, StageRun
from tests.conftest import FIXED_NOW


def snapshot(**overrides: object) -> Snapshot:
    values: dict[str, object] = {
        "taken_at": FIXED_NOW,
        "embedded": False,
        "paused": None,
        "queues": (QueueDepth("papermail.pipeline", 1, 0), QueueDepth("papermail.send", 250, 4)),
        "workers": ("a@host", "b@host", "c@host"),
        "beat": BeatStatus(
            lock_held=True, last_tick=FIXED_NOW - dt.timedelta(seconds=5), last_dispatch=FIXED_NOW
        ),
        "runs": (
            StageRun(
                "ingest",
                FIXED_NOW - dt.timedelta(seconds=30),
                FIXED_NOW,
                True,
                {"fetched": 50, "inserted": 4, "updated": 46, "rejected": 1},
                FIXED_NOW,
            ),
            StageRun("edition", FIXED_NOW, FIXED_NOW, False, {"error": "boom"}, None),
            StageRun("planning", None, None, None, {}, None),
        ),
        "funnel": {
            "pending": 10,
            "sending": 2,
            "sent": 300,
            "retry": 3,
            "failed": 1,
            "suppressed": 1,
            "skipped": 0,
        },
        "backlog": {"pending": 10, "retry": 3, "sending": 2},
        "send_rate_5m": 42.5,
        "send_rate_60m": 12.0,
        "bounces_today": 1,
        "subscribers": {"pending": 2, "active": 320, "unsubscribed": 5, "suppressed": 1},
    }
    return Snapshot(**(values | overrides))  # type: ignore[arg-type]


def scrape(snap: Snapshot, totals: metrics.SendTotals | None = None) -> dict[str, object]:
    registry = metrics.make_registry(
        snapshot=lambda: snap, send_totals=(lambda: totals) if totals is not None else None
    )
    text = metrics.render(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(family: object, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in family.samples}  # type: ignore[attr-defined]


def test_every_figure_of_the_snapshot_is_a_gauge() -> None:
    families = scrape(snapshot())

    queue = {
        (s.labels["queue"], s.labels["state"]): s.value
        for s in families["papermail_queue_messages"].samples
    }
    assert queue[("papermail.send", "ready")] == 250 and queue[("papermail.send", "unacked")] == 4
    assert families["papermail_workers_online"].samples[0].value == 3
    assert values(families["papermail_deliveries_today"], "status")["sent"] == 300
    assert values(families["papermail_delivery_backlog"], "status")["pending"] == 10
    assert values(families["papermail_send_rate_per_minute"], "window") == {"5m": 42.5, "60m": 12.0}
    assert values(families["papermail_subscribers"], "status")["active"] == 320
    assert families["papermail_bounces_today"].samples[0].value == 1
    assert (
        families["papermail_beat_last_tick_timestamp_seconds"].samples[0].value
        == (FIXED_NOW - dt.timedelta(seconds=5)).timestamp()
    )
    assert values(families["papermail_stage_last_run_ok"], "stage") == {"ingest": 1, "edition": 0}
    assert values(families["papermail_stage_last_success_timestamp_seconds"], "stage") == {
        "ingest": FIXED_NOW.timestamp()
    }
    assert values(families["papermail_stage_last_run_duration_seconds"], "stage")["ingest"] == 30
    assert values(families["papermail_ingest_last_papers"], "result") == {
        "fetched": 50,
        "inserted": 4,
        "updated": 46,
        "rejected": 1,
    }
    assert values(families["papermail_monitoring_source_up"], "source") == {
        "redis": 1,
        "database": 1,
        "celery": 1,
    }


def test_a_source_that_is_down_says_so_and_its_gauges_are_left_out() -> None:
    families = scrape(
        snapshot(
            errors=("database: OperationalError: gone",),
            runs=(),
            funnel={},
            backlog={},
            subscribers={},
        )
    )
    assert values(families["papermail_monitoring_source_up"], "source")["database"] == 0
    assert "papermail_deliveries_today" not in families
    assert "papermail_stage_last_run_ok" not in families
    assert "papermail_queue_messages" in families


def test_sends_are_tallied_flushed_to_redis_and_exposed_as_a_histogram(
    redis: fakeredis.FakeRedis,
) -> None:
    worker_a, worker_b = SendTally(), SendTally()
    for seconds in (0.004, 0.02, 0.02, 0.3):
        worker_a.observe("sent", seconds)
    worker_a.observe("bounced", 0.05)
    worker_b.observe("retry", 45.0)  # beyond the last bucket: only +Inf counts it
    worker_b.observe("skipped", None)  # no SMTP, no latency
    worker_a.flush(redis)
    worker_b.flush(redis)
    worker_b.flush(redis)  # nothing new: a no-op

    families = scrape(snapshot(), metrics.read_send_totals(redis))

    assert values(families["papermail_sends"], "outcome") == {
        "sent": 4,
        "retry": 1,
        "failed": 0,
        "bounced": 1,
        "skipped": 1,
    }
    buckets = {
        s.labels["le"]: s.value
        for s in families["papermail_smtp_send_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.005"] == 1 and buckets["0.025"] == 3 and buckets["0.05"] == 4
    assert buckets["0.5"] == 5 and buckets["30.0"] == 5 and buckets["+Inf"] == 6
    summed = {s.name: s.value for s in families["papermail_smtp_send_seconds"].samples}
    assert summed["papermail_smtp_send_seconds_count"] == 6
    assert math.isclose(summed["papermail_smtp_send_seconds_sum"], 45.394)


def test_a_failed_flush_keeps_the_tally_for_next_time(redis: fakeredis.FakeRedis) -> None:
    tally = SendTally()
    tally.observe("sent", 0.01)
    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(redis_lib.RedisError):
        tally.flush(dead)
    tally.flush(redis)
    assert metrics.read_send_totals(redis).outcomes == {"sent": 1}


def test_observe_refuses_an_outcome_nobody_would_graph() -> None:
    with pytest.raises(ValueError, match="unknown send outcome"):
        SendTally().observe("delivered", 0.1)


def test_the_module_keeps_no_tally_of_its_own(redis: fakeredis.FakeRedis) -> None:
    assert not any(isinstance(v, SendTally) for v in vars(metrics).values())
    tally = SendTally()
    tally.observe("sent", 0.2)
    tally.observe("skipped")  # no SMTP time: counted, no latency
    tally.flush(redis)
    assert metrics.read_send_totals(redis).outcomes == {"sent": 1, "skipped": 1}
    assert metrics.read_send_totals(redis).latency_count == 1


def test_the_redis_hash_keeps_its_field_names(redis: fakeredis.FakeRedis) -> None:
    # Workers and the web process may run different releases during a deploy.
    tally = SendTally()
    tally.observe("sent", 0.25)
    tally.observe("retry", 45.0)
    tally.flush(redis)
    raw = {
        k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
        for k, v in redis.hgetall(metrics.SENDS_KEY).items()
    }
    assert metrics.SENDS_KEY == "papermail:metrics:sends"
    assert raw == {
        "outcome:sent": "1",
        "outcome:retry": "1",
        "bucket:0.25": "1",
        "bucket:+Inf": "1",
        "sum": "45.25",
        "count": "2",
    }
