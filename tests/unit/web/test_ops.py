"""/ops, its actions, its sign-in throttle, /metrics and /readyz through TestClient
(SQLite + fakeredis)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import fakeredis
import pytest
import redis as redis_lib
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from workers.dispatch import CeleryDispatcher

from papermail.config import Settings
from papermail.models import Base, Delivery, DeliveryStatus, SubscriberStatus
from papermail.ops.control import pause_sending, sending_paused
from papermail.ops.jobs import recorded
from papermail.ops.send_tally import SendTally
from papermail.ops.throttle import FixedWindow, client_key
from papermail.stages import InlineDispatcher
from papermail.subscribers.tokens import Purpose
from papermail.web.csrf import CsrfGuard
from papermail.web.ops import auth, charts
from papermail.web.ops import routes as ops
from papermail.wiring import Wiring
from tests.support.celery import FakeCelery
from tests.support.ledger import (
    seed_delivery,
    seed_edition,
    seed_funnel,
    seed_subscriber,
)
from tests.support.web import Web

PASSWORD = "s3cret-ops-password"  # noqa: S105 (a test credential)
AUTH = ("ops", PASSWORD)
QUEUES = ("papermail.pipeline", "papermail.send")


def make_runtime(tmp_path: Path, **overrides: object) -> Wiring:
    fields: dict[str, object] = {
        "var_dir": tmp_path / "var",
        "base_url": "https://papers.example.org",
        "mail_from": "papermail <digest@papers.example.org>",
        "secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "ops_password": PASSWORD,
        "mail_backend": "memory",
    }
    rt = Wiring(Settings(_env_file=None, **(fields | overrides)))
    Base.metadata.create_all(rt.engine)
    return rt


def make_client(rt: Wiring, celery: FakeCelery | None = None) -> TestClient:
    app = FastAPI()
    # A fake Celery app stands in for the broker: actions that queue tasks are recorded.
    dispatcher = InlineDispatcher(rt) if celery is None else CeleryDispatcher(celery)  # type: ignore[arg-type]
    ops.attach_ops(app, wiring=rt, dispatcher=dispatcher, celery=celery)
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def rt(tmp_path: Path) -> Wiring:
    return make_runtime(tmp_path)


@pytest.fixture
def celery() -> FakeCelery:
    return FakeCelery(workers=("send-1@host", "send-2@host"))


@pytest.fixture
def client(rt: Wiring, celery: FakeCelery) -> TestClient:
    return make_client(rt, celery)


def token_from(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def page_token(client: TestClient) -> str:
    response = client.get("/ops", auth=AUTH)
    assert response.status_code == 200
    return token_from(response.text)


# --- access ---------------------------------------------------------------------------------


def test_the_dashboard_asks_for_credentials(client: TestClient) -> None:
    response = client.get("/ops")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Basic realm="papermail ops"')
    assert client.get("/ops", auth=("ops", "wrong")).status_code == 401
    assert client.get("/ops", auth=("root", PASSWORD)).status_code == 401
    assert client.get("/metrics").status_code == 401


def test_a_malformed_authorization_header_is_just_unauthorised(client: TestClient) -> None:
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x"):
        assert client.get("/ops", headers={"Authorization": header}).status_code == 401


def test_production_without_a_password_refuses_to_serve(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, ops_password=None)
    rt.settings = rt.settings.model_copy(update={"environment": "production"})
    client = make_client(rt)
    for path in ("/ops", "/ops/panel", "/ops/status.json", "/metrics"):
        response = client.get(path)
        assert response.status_code == 503
        assert "PAPERMAIL_OPS_PASSWORD" in response.text
    assert client.post("/ops/pause", data={"csrf_token": "x"}).status_code == 503
    assert client.get("/readyz").status_code == 200  # health stays visible to the balancer


def test_development_without_a_password_serves_with_a_warning(tmp_path: Path) -> None:
    client = make_client(make_runtime(tmp_path, ops_password=None))
    response = client.get("/ops")
    assert response.status_code == 200
    assert "open to anyone who can reach it" in response.text


def test_the_page_is_not_cached_and_runs_under_a_strict_csp(client: TestClient) -> None:
    response = client.get("/ops", auth=AUTH)
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in response.text and " style=" not in response.text


# --- the sign-in throttle --------------------------------------------------------------------


def from_address(client: TestClient, host: str) -> TestClient:
    return TestClient(client.app, client=(host, 50000), follow_redirects=False)


def test_wrong_passwords_are_throttled_per_client_address(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    attacker = from_address(client, "203.0.113.7")
    operator = from_address(client, "198.51.100.2")
    caplog.set_level(logging.WARNING, logger="papermail.web.ops.auth")
    for n in range(auth.FAILURE_LIMIT):
        assert attacker.get("/ops", auth=("ops", f"guess-{n}")).status_code == 401

    refused = attacker.get("/ops", auth=("ops", "guess-last"))

    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= auth.FAILURE_WINDOW_SECONDS
    assert refused.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in refused.headers
    # Over budget, not even the right password is compared (else guessing goes on).
    assert attacker.get("/ops", auth=AUTH).status_code == 429
    assert attacker.get("/metrics", auth=AUTH).status_code == 429
    # Another address is not affected, and its good sign-in resets nobody's budget.
    assert operator.get("/ops", auth=AUTH).status_code == 200
    assert attacker.get("/ops", auth=("ops", "guess-after")).status_code == 429
    refusals = [r for r in caplog.records if "203.0.113.7" in r.getMessage()]
    assert refusals and all(r.levelno == logging.WARNING for r in refusals)
    assert not any("guess" in r.getMessage() or PASSWORD in r.getMessage() for r in caplog.records)


def test_a_good_sign_in_does_not_refill_a_shared_address(client: TestClient) -> None:
    # An office NAT: the attacker cannot wipe their count by waiting for the operator.
    shared = from_address(client, "192.0.2.10")
    for _ in range(auth.FAILURE_LIMIT - 1):
        assert shared.get("/ops", auth=("ops", "wrong")).status_code == 401
    assert shared.get("/ops", auth=AUTH).status_code == 200
    assert shared.get("/ops", auth=("ops", "wrong")).status_code == 401  # the last one
    assert shared.get("/ops", auth=("ops", "wrong")).status_code == 429


def test_a_request_without_credentials_is_a_challenge_not_a_failure(client: TestClient) -> None:
    for _ in range(3 * auth.FAILURE_LIMIT):  # the browser's first try, every page load
        assert client.get("/ops").status_code == 401
    assert client.get("/ops", auth=AUTH).status_code == 200


def test_the_budget_comes_back_when_the_window_ends(redis: fakeredis.FakeRedis) -> None:
    now = [1_000_000.0]  # 1,000,000 s: a window boundary for a 100 s window
    budget = FixedWindow(redis, prefix="t", limit=3, window_seconds=100, clock=lambda: now[0])
    now[0] += 40
    assert [budget.hit("a") for _ in range(3)] == [1, 2, 3]
    assert budget.retry_after("a") == 60
    assert budget.retry_after("b") is None
    now[0] += 60
    assert budget.retry_after("a") is None


def test_ipv6_clients_share_a_budget_per_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("testclient") == "testclient"


# --- what the page shows --------------------------------------------------------------------


def test_the_dashboard_shows_queues_workers_funnel_and_runs(rt: Wiring, client: TestClient) -> None:
    now = dt.datetime.now(dt.UTC)
    with rt.sessions() as session:
        edition = seed_edition(session, day=now.date())
        seed_funnel(session, edition, {"sent": 12, "failed": 2, "pending": 5}, created_at=now)
    rt.redis.rpush("papermail.send", "a", "b", "c")
    with recorded(rt.sessions, stage="ingest", clock=lambda: now) as detail:
        detail.update(fetched=48, inserted=6, rejected=1)

    page = client.get("/ops", auth=AUTH).text

    assert "send-1@host, send-2@host" in page
    assert re.search(r"papermail\.send</th><td class=\"num\">3</td>", page)
    assert "48 fetched, 6 new, 1 rejected" in page
    assert "Retry 2 failed" in page
    assert page.count("<svg") == 5  # three charts, bounce and complaint rates, the funnel bar


def test_untrusted_text_is_escaped(rt: Wiring, client: TestClient) -> None:
    with (
        pytest.raises(RuntimeError),
        recorded(rt.sessions, stage="ingest", clock=lambda: dt.datetime.now(dt.UTC)),
    ):
        raise RuntimeError("<script>alert(1)</script>")
    page = client.get("/ops", auth=AUTH).text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_the_dashboard_shows_each_source_and_alerts_on_one_failing_for_a_day(
    rt: Wiring, client: TestClient
) -> None:
    hostile = "[red]x[/red]<script>alert(1)</script>"
    now = dt.datetime.now(dt.UTC)
    with recorded(rt.sessions, stage="ingest", clock=lambda: now - dt.timedelta(hours=30)) as d:
        d.update(source="hf", fetched=42, inserted=40, updated=2, rejected=3)
    for hours_ago, error in ((26, "first failure"), (1, hostile)):  # failing for over a day
        with (
            pytest.raises(RuntimeError),
            recorded(
                rt.sessions, stage="ingest", clock=lambda h=hours_ago: now - dt.timedelta(hours=h)
            ) as d,
        ):
            d["source"] = "hf"
            raise RuntimeError(error)

    page = client.get("/ops", auth=AUTH).text

    assert re.search(r'class="notice error" role="alert">\s*<h2>A paper source is failing', page)
    assert re.search(r'<tr class="bad">\s*<th scope="row">hf</th>', page)
    assert "failing for over a day: last success 1d ago" in page
    accepted_rejected = r'<td class="num">42</td>\s*<td class="num">3</td>'
    assert re.search(accepted_rejected, page)
    assert re.search(r'<th scope="row">arxiv</th>\s*<td>never fetched</td>', page)
    assert "RuntimeError: [red]x[/red]&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    data = client.get("/ops/status.json", auth=AUTH).json()
    hf, arxiv = data["sources"]
    assert (hf["source"], hf["state"], hf["accepted"], arxiv["state"]) == (
        "hf",
        "alert",
        42,
        "never fetched",
    )
    assert hf["last_error"] == f"RuntimeError: {hostile}"  # data in JSON, as typed
    families = {
        f.name: f for f in text_string_to_metric_families(client.get("/metrics", auth=AUTH).text)
    }
    alerts = {s.labels["source"]: s.value for s in families["papermail_source_alert"].samples}
    assert alerts == {"hf": 1, "arxiv": 0}
    (success,) = families["papermail_source_last_success_timestamp_seconds"].samples
    assert success.labels == {"source": "hf"}
    assert success.value == pytest.approx((now - dt.timedelta(hours=30)).timestamp())


def test_a_done_notice_only_ever_echoes_digits(client: TestClient) -> None:
    page = client.get("/ops?done=retried&n=<b>x</b>&edition=7", auth=AUTH).text
    assert "? failed deliveries of edition 7 set to retry." in page
    assert "<b>x</b>" not in page and "&lt;b&gt;" not in page


def test_the_panel_and_json_carry_the_same_figures(client: TestClient, rt: Wiring) -> None:
    rt.redis.rpush("papermail.pipeline", "job")
    panel = client.get("/ops/panel", auth=AUTH)
    assert panel.status_code == 200 and "<html" not in panel.text and "Queues" in panel.text
    data = client.get("/ops/status.json", auth=AUTH).json()
    assert data["queues"][0] == {"name": "papermail.pipeline", "ready": 1, "unacked": 0, "total": 1}
    assert data["workers"] == ["send-1@host", "send-2@host"]


def test_static_assets_are_served_and_nothing_else(client: TestClient) -> None:
    assert client.get("/ops/static/ops.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ops/static/ops.css").status_code == 200
    assert client.get("/ops/static/..%2Fpapermail.css").status_code == 404


# --- actions --------------------------------------------------------------------------------


def test_an_action_without_a_valid_token_changes_nothing(rt: Wiring, client: TestClient) -> None:
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post("/ops/pause", data=data, auth=AUTH)
        assert response.status_code == 403
        assert "nothing was done" in response.text
    assert not sending_paused(rt.redis)


def test_a_token_is_bound_to_the_operator_and_the_secret(tmp_path: Path, rt: Wiring) -> None:
    other = make_client(make_runtime(tmp_path / "other", secret_key="another-secret-" * 3))
    token = page_token(other)
    assert (
        make_client(rt).post("/ops/pause", data={"csrf_token": token}, auth=AUTH).status_code == 403
    )


def test_a_token_lasts_twelve_hours_and_only_for_ops(
    rt: Wiring, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def issued(hours_ago: int) -> str:
        then = int(time.time()) - hours_ago * 3600
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: then)
        token = page_token(client)
        monkeypatch.undo()
        return token

    def pause_with(token: str) -> int:
        return client.post("/ops/pause", data={"csrf_token": token}, auth=AUTH).status_code

    subscriber_form = CsrfGuard(rt.settings.secret_key.get_secret_value()).issue("ops")
    assert pause_with(subscriber_form) == 403
    assert pause_with(issued(13)) == 403
    assert not sending_paused(rt.redis)
    assert pause_with(issued(11)) == 303
    assert sending_paused(rt.redis)


def test_a_cross_site_post_is_refused_even_with_a_token(rt: Wiring, client: TestClient) -> None:
    token = page_token(client)
    response = client.post(
        "/ops/pause",
        data={"csrf_token": token},
        auth=AUTH,
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403
    assert not sending_paused(rt.redis)


def test_pause_then_resume_requeues_what_waited(
    rt: Wiring, client: TestClient, celery: FakeCelery
) -> None:
    with rt.sessions() as session:
        edition = seed_edition(session, day=dt.date.today())
        seed_funnel(session, edition, {"pending": 3})
    token = page_token(client)

    response = client.post(
        "/ops/pause", data={"csrf_token": token, "reason": "relay fix"}, auth=AUTH
    )
    assert response.status_code == 303 and response.headers["location"].startswith(
        "/ops?done=paused"
    )
    assert sending_paused(rt.redis)
    assert "relay fix" in client.get("/ops", auth=AUTH).text
    assert (
        "already paused"
        in client.get(
            client.post("/ops/pause", data={"csrf_token": token}, auth=AUTH).headers["location"],
            auth=AUTH,
        ).text
    )

    response = client.post("/ops/resume", data={"csrf_token": token}, auth=AUTH)
    assert response.headers["location"].startswith("/ops?done=resumed&n=3")
    assert not sending_paused(rt.redis)
    assert [name for name, _ in celery.sent] == ["papermail.send_batch"]
    assert sorted(celery.sent[0][1][0]) == [1, 2, 3]


def test_retry_failed_from_the_page(rt: Wiring, client: TestClient, celery: FakeCelery) -> None:
    with rt.sessions() as session:
        edition = seed_edition(session, day=dt.date.today())
        seed_funnel(session, edition, {"failed": 2, "sent": 1})
        edition_id = edition.id
    token = page_token(client)

    response = client.post(
        "/ops/retry-failed", data={"csrf_token": token, "edition": str(edition_id)}, auth=AUTH
    )

    assert response.headers["location"].startswith(f"/ops?done=retried&n=2&edition={edition_id}")
    with rt.sessions() as session:
        statuses = sorted(s.value for s in session.scalars(select(Delivery.status)))
    assert statuses == ["retry", "retry", "sent"]
    assert celery.sent and celery.sent[0][0] == "papermail.send_batch"
    missing = client.post(
        "/ops/retry-failed", data={"csrf_token": token, "edition": "999"}, auth=AUTH
    )
    assert missing.status_code == 404 and "no edition 999" in missing.text


def test_resend_from_the_page(rt: Wiring, client: TestClient, celery: FakeCelery) -> None:
    with rt.sessions() as session:
        edition = seed_edition(session, day=dt.date.today())
        ada = seed_subscriber(session, email="ada@example.org")
        seed_delivery(session, edition=edition, subscriber=ada, status=DeliveryStatus.SENT)
        gone = seed_subscriber(
            session, email="gone@example.org", status=SubscriberStatus.SUPPRESSED
        )
        session.commit()
        delivery_id = session.scalar(select(Delivery.id))
        del gone
    token = page_token(client)

    response = client.post(
        "/ops/resend", data={"csrf_token": token, "email": "Ada@Example.org"}, auth=AUTH
    )

    assert response.status_code == 303
    assert f"delivery={delivery_id}" in response.headers["location"]
    assert celery.sent == [("papermail.send_batch", [[delivery_id]])]
    refused = client.post(
        "/ops/resend", data={"csrf_token": token, "email": "gone@example.org"}, auth=AUTH
    )
    assert refused.status_code == 409 and "suppressed" in refused.text
    unknown = client.post(
        "/ops/resend", data={"csrf_token": token, "email": "who@example.org"}, auth=AUTH
    )
    assert unknown.status_code == 404
    bad = client.post(
        "/ops/resend", data={"csrf_token": token, "email": "not an address"}, auth=AUTH
    )
    assert bad.status_code == 400


def test_reingest_queues_the_task_in_production(client: TestClient, celery: FakeCelery) -> None:
    token = page_token(client)
    response = client.post("/ops/reingest", data={"csrf_token": token}, auth=AUTH)
    assert response.headers["location"].startswith("/ops?done=ingest-queued")
    assert celery.sent == [("papermail.ingest_papers", [])]


# --- machines -------------------------------------------------------------------------------


def test_metrics_parse_as_prometheus_text(rt: Wiring, client: TestClient) -> None:
    with rt.sessions() as session:
        edition = seed_edition(session, day=dt.datetime.now(dt.UTC).date())
        seed_funnel(session, edition, {"sent": 4, "failed": 1}, created_at=dt.datetime.now(dt.UTC))
    pause_sending(rt.redis, now=dt.datetime.now(dt.UTC))

    response = client.get("/metrics", auth=AUTH)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["papermail_workers_online"].samples[0].value == 2
    assert families["papermail_sending_paused"].samples[0].value == 1
    assert "papermail_build_info" in families and "process_cpu_seconds" in families
    assert not any("today" in name or "rate" in name for name in families)


def test_embedded_metrics_count_the_sends_in_the_ledger(rt: Wiring, client: TestClient) -> None:
    # Embedded `papermail web` shares no Redis with the `papermail demo` that sent: the
    # workers' tally is not there, so the counter comes from the ledger.
    assert rt.settings.embedded
    with rt.sessions() as session:
        edition = seed_edition(session, day=dt.datetime.now(dt.UTC).date())
        seed_funnel(session, edition, {"sent": 4, "failed": 1, "pending": 2})

    families = {
        f.name: f for f in text_string_to_metric_families(client.get("/metrics", auth=AUTH).text)
    }

    sends = {s.labels["outcome"]: s.value for s in families["papermail_sends"].samples}
    assert sends["sent"] == 4 and sends["failed"] == 1
    assert "papermail_smtp_send_seconds" not in families


def test_metrics_count_the_workers_tally_when_not_embedded(tmp_path: Path) -> None:
    rt = make_runtime(
        tmp_path,
        redis_url="redis://127.0.0.1:1/0",  # replaced by fakeredis below
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    rt.redis = fakeredis.FakeRedis()
    Base.metadata.create_all(rt.engine)
    with rt.sessions() as session:  # rows the ledger has but no worker of this fleet sent
        seed_funnel(session, seed_edition(session, day=dt.date.today()), {"sent": 9})
    tally = SendTally()
    tally.observe("sent", 0.02)
    tally.observe("retry", 0.5)
    tally.flush(rt.redis)

    text = make_client(rt, FakeCelery()).get("/metrics", auth=AUTH).text

    families = {f.name: f for f in text_string_to_metric_families(text)}
    sends = {s.labels["outcome"]: s.value for s in families["papermail_sends"].samples}
    assert sends["sent"] == 1 and sends["retry"] == 1
    assert "papermail_smtp_send_seconds" in families


def test_request_metrics_name_the_route_template_never_the_token(web: Web) -> None:
    subscriber = web.add("ada@example.org")
    token = web.token(Purpose.PREFERENCES, subscriber)
    assert web.client.get(f"/preferences/{token}").status_code == 200
    assert web.client.get("/no/such/page").status_code == 404

    text = web.client.get("/metrics").text  # development, no password: open

    assert token not in text and "/no/such/page" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["papermail_http_requests"].samples
        if s.name == "papermail_http_requests_total"
    }
    assert requests[("GET", "/preferences/{token}", "200")] == 1
    assert requests[("GET", "<unmatched>", "404")] == 1
    durations = {
        (s.labels["method"], s.labels["route"])
        for s in families["papermail_http_request_duration_seconds"].samples
    }
    assert ("GET", "/preferences/{token}") in durations


def test_readyz_says_which_dependency_is_down(rt: Wiring, client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ready", "database": "ok", "redis": "ok"}
    rt.redis = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["redis"] == "failing" and response.json()["database"] == "ok"


def test_the_page_still_renders_when_redis_is_down(rt: Wiring, client: TestClient) -> None:
    rt.redis = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    response = client.get("/ops", auth=AUTH)
    assert response.status_code == 200
    assert "Some figures are missing" in response.text and "redis: ConnectionError" in response.text


# --- charts ---------------------------------------------------------------------------------


def test_chart_maths_needs_no_web_framework() -> None:
    code = "import sys, papermail.web.ops.charts; sys.exit('fastapi' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_nice_ceiling_rounds_up_to_one_two_or_five() -> None:
    given = (0, 1, 1.5, 3, 7, 10, 11, 120, 501)
    assert [charts.nice_ceiling(v) for v in given] == [1, 1, 2, 5, 10, 10, 20, 200, 1000]


def test_the_funnel_bar_fills_the_width_in_funnel_order() -> None:
    segments = charts.funnel_bar({"sent": 3, "failed": 0, "pending": 1}, width=100)
    assert [(s.name, s.x, s.w, s.count) for s in segments] == [
        ("pending", 0.0, 25.0, 1),
        ("sent", 25.0, 75.0, 3),
    ]
    assert charts.funnel_bar({}) == ()


def test_a_bar_chart_scales_to_a_round_top_and_says_itself_in_one_sentence() -> None:
    hours = tuple(dt.datetime(2026, 11, 26, h, tzinfo=dt.UTC) for h in range(24))
    values = (0,) * 23 + (7,)
    chart = charts.bar_chart(
        id="sent", title="Sent per hour", css="sent", unit="sent", hours=hours, values=values
    )
    assert chart.summary == "Sent per hour: 7 sent in 24 hours, at most 7 in one hour."
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    assert chart.bars[-1].h == chart.plot_h * 7 / 10
    assert chart.bars[-1].title == "23:00-00:00 UTC: 7 sent"
