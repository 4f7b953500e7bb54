"""metrics: the snapshot as Prometheus gauges, send outcomes/latency from every worker (or
the ledger, embedded), build info, process metrics and the web app's requests."""

from __future__ import annotations

import datetime as dt
import math

import fakeredis
import pytest
import redis as redis_lib
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from papermail import __version__
from papermail.models import DeliveryStatus
from papermail.ops import metrics, send_tally
from papermail.ops.broker import BeatStatus, QueueDepth
from papermail.ops.http_metrics import HttpMetrics
from papermail.ops.monitoring import Snapshot, StageRun
from papermail.ops.send_tally import SendTally
from tests.conftest import FIXED_NOW
from tests.support.ledger import seed_delivery, seed_edition


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


def scrape(
    snap: Snapshot, totals: send_tally.SendTotals | None = None, **options: object
) -> dict[str, object]:
    registry = metrics.make_registry(
        snapshot=lambda: snap,
        send_totals=(lambda: totals) if totals is not None else None,
        **options,  # type: ignore[arg-type]
    )
    return families_of(registry)


def families_of(registry: CollectorRegistry) -> dict[str, object]:
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
    assert values(families["papermail_delivery_backlog"], "status")["pending"] == 10
    assert values(families["papermail_subscribers"], "status")["active"] == 320
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
    assert "papermail_delivery_backlog" not in families
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

    families = scrape(snapshot(), send_tally.read_send_totals(redis))

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
    assert send_tally.read_send_totals(redis).outcomes == {"sent": 1}


def test_observe_refuses_an_outcome_nobody_would_graph() -> None:
    with pytest.raises(ValueError, match="unknown send outcome"):
        SendTally().observe("delivered", 0.1)


def test_the_module_keeps_no_tally_of_its_own(redis: fakeredis.FakeRedis) -> None:
    assert not any(isinstance(v, SendTally) for v in vars(send_tally).values())
    tally = SendTally()
    tally.observe("sent", 0.2)
    tally.observe("skipped")  # no SMTP time: counted, no latency
    tally.flush(redis)
    assert send_tally.read_send_totals(redis).outcomes == {"sent": 1, "skipped": 1}
    assert send_tally.read_send_totals(redis).latency_count == 1


def test_the_redis_hash_keeps_its_field_names(redis: fakeredis.FakeRedis) -> None:
    # Workers and the web process may run different releases during a deploy.
    tally = SendTally()
    tally.observe("sent", 0.25)
    tally.observe("retry", 45.0)
    tally.flush(redis)
    raw = {
        k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
        for k, v in redis.hgetall(send_tally.SENDS_KEY).items()
    }
    assert send_tally.SENDS_KEY == "papermail:metrics:sends"
    assert raw == {
        "outcome:sent": "1",
        "outcome:retry": "1",
        "bucket:0.25": "1",
        "bucket:+Inf": "1",
        "sum": "45.25",
        "count": "2",
    }


# --- by Prometheus's conventions -------------------------------------------------------------


def test_no_precomputed_rates_and_no_today_gauges() -> None:
    # Rates are PromQL's job (rate() over a counter), and a "today" gauge that drops to 0 at
    # midnight is neither a counter nor current state.
    families = scrape(snapshot(), send_tally.SendTotals())
    papermail = {name for name in families if name.startswith("papermail_")}
    assert not {name for name in papermail if "today" in name or "rate" in name}
    assert families["papermail_sends"].type == "counter"  # exposed as papermail_sends_total
    gauges = {name for name in papermail if families[name].type == "gauge"}  # type: ignore[attr-defined]
    assert "papermail_delivery_backlog" in gauges and "papermail_subscribers" in gauges


def test_build_info_and_the_process_own_metrics_are_exported() -> None:
    families = scrape(snapshot())
    info = families["papermail_build_info"]  # an info metric: a gauge at 1 in text format
    assert [(s.name, s.labels, s.value) for s in info.samples] == [  # type: ignore[attr-defined]
        ("papermail_build_info", {"version": __version__}, 1.0)
    ]
    assert "process_cpu_seconds" in families  # ProcessCollector (Linux /proc)
    assert "process_resident_memory_bytes" in families
    assert "python_info" in families  # PlatformCollector


def test_embedded_send_counts_come_from_the_ledger(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        edition = seed_edition(session, day=FIXED_NOW.date())
        for _ in range(3):
            seed_delivery(session, edition=edition, status=DeliveryStatus.SENT)
        # An operator resend: back to pending, but it went out once (sent_at stays).
        seed_delivery(session, edition=edition, status=DeliveryStatus.PENDING, sent_at=FIXED_NOW)
        seed_delivery(session, edition=edition, status=DeliveryStatus.FAILED, last_error="4xx x5")
        seed_delivery(session, edition=edition, status=DeliveryStatus.FAILED, last_error=None)
        seed_delivery(
            session, edition=edition, status=DeliveryStatus.FAILED, last_error="bounced: 550"
        )
        seed_delivery(session, edition=edition, status=DeliveryStatus.SKIPPED)
        seed_delivery(session, edition=edition, status=DeliveryStatus.RETRY)
        session.commit()

    totals = send_tally.ledger_send_totals(session_factory)
    families = scrape(snapshot(embedded=True), totals, send_source="database")

    assert values(families["papermail_sends"], "outcome") == {
        "sent": 4,
        "failed": 2,
        "bounced": 1,
        "skipped": 1,
    }
    assert "papermail_smtp_send_seconds" not in families  # the ledger keeps no SMTP times


def test_send_metrics_wait_for_the_source_they_read() -> None:
    down = snapshot(errors=("database: OperationalError: gone",))
    assert "papermail_sends" not in scrape(down, send_tally.SendTotals(), send_source="database")
    assert "papermail_sends" in scrape(down, send_tally.SendTotals(), send_source="redis")


def test_http_requests_are_counted_by_route_template_and_method() -> None:
    registry = metrics.make_registry(snapshot=snapshot)
    http = HttpMetrics(registry)
    http.observe(method="GET", route="/preferences/{token}", status=200, seconds=0.03)
    http.observe(method="GET", route="/preferences/{token}", status=400, seconds=0.01)
    http.observe(method="BREW", route=None, status=405, seconds=0.001)

    families = families_of(registry)

    requests = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["papermail_http_requests"].samples  # type: ignore[attr-defined]
        if s.name == "papermail_http_requests_total"
    }
    assert requests == {
        ("GET", "/preferences/{token}", "200"): 1,
        ("GET", "/preferences/{token}", "400"): 1,
        ("OTHER", "<unmatched>", "405"): 1,
    }
    counts = {
        (s.labels["method"], s.labels["route"]): s.value
        for s in families["papermail_http_request_duration_seconds"].samples  # type: ignore[attr-defined]
        if s.name.endswith("_count")
    }
    assert counts == {("GET", "/preferences/{token}"): 2, ("OTHER", "<unmatched>"): 1}
