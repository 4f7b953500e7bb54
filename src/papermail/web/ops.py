"""The operator's dashboard (/ops), Prometheus metrics (/metrics) and readiness (/readyz).

Include ``router`` in an app whose ``app.state.runtime`` is the process's Runtime.

Access: HTTP basic auth against PAPERMAIL_OPS_USERNAME / PAPERMAIL_OPS_PASSWORD,
compared in constant time. With no password set, production refuses to serve /ops and
/metrics at all (503, saying what to set); development serves them with a warning
banner, since a laptop demo should not need a password. /readyz is always open: it
says only "ok" or which dependency is down.

Actions are POST forms carrying a signed CSRF token bound to the operator's name
(basic-auth credentials ride along on cross-site POSTs, so they prove nothing alone).
Success redirects back to /ops (POST-redirect-GET); a refusal re-renders the page.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from papermail import metrics, monitoring, operations
from papermail.runtime import Runtime, utcnow
from papermail.subscriptions import InvalidEmail, find

log = logging.getLogger(__name__)
router = APIRouter()

CSRF_SALT = "papermail.ops-csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 12 * 3600  # a dashboard left open overnight needs a reload, not more
REFRESH_SECONDS = 15
REALM = 'Basic realm="papermail ops", charset="UTF-8"'
# The same policy as the subscriber pages: our own CSS and JS files, nothing inline.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
NO_STORE = {"Cache-Control": "no-store", "Content-Security-Policy": CSP}


def get_runtime(request: Request) -> Runtime:
    """The app's Runtime: ``create_app`` sets ``app.state.runtime``."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_desk(request: Request) -> operations.OpsDesk:
    """One OpsDesk (and so one Celery app) per web app, made on first use."""
    desk = getattr(request.app.state, "ops_desk", None)
    if desk is None:
        desk = operations.OpsDesk.for_runtime(get_runtime(request))
        request.app.state.ops_desk = desk
    return desk


# --- access ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    open_access: bool  # development without a password: anyone who can reach the page


def _gate(request: Request) -> Operator | Response:
    settings = get_runtime(request).settings
    if settings.ops_password is None:
        if settings.environment == "production":
            return _plain(
                503,
                "The ops dashboard and /metrics are disabled: set PAPERMAIL_OPS_PASSWORD "
                "(and PAPERMAIL_OPS_USERNAME, default 'ops') to enable them.\n",
            )
        return Operator(name="anonymous", open_access=True)
    given = _basic_credentials(request)
    expected = (settings.ops_username, settings.ops_password.get_secret_value())
    if given is not None:
        # Both compared, always: no early exit that tells a right name from a wrong one.
        user_ok = hmac.compare_digest(given[0].encode(), expected[0].encode())
        password_ok = hmac.compare_digest(given[1].encode(), expected[1].encode())
        if user_ok and password_ok:
            return Operator(name=given[0], open_access=False)
    return _plain(401, "Authentication required.\n", {"WWW-Authenticate": REALM})


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _plain(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body,
        status_code=status,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _csrf(request: Request) -> URLSafeTimedSerializer:
    secret = get_runtime(request).settings.secret_key.get_secret_value()
    return URLSafeTimedSerializer(secret, salt=CSRF_SALT)


def csrf_token(request: Request, operator: Operator) -> str:
    return str(_csrf(request).dumps(operator.name))


def csrf_ok(request: Request, operator: Operator, token: str) -> bool:
    # Browsers label every request with where it came from; a cross-site POST is refused
    # even before the token is looked at. (Origin can't be used: no-referrer makes it null.)
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    try:
        bound = _csrf(request).loads(token, max_age=CSRF_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(bound, str) and hmac.compare_digest(bound, operator.name)


# --- pages ----------------------------------------------------------------------------------

DONE = {
    "paused": ("ok", "Sending paused. Workers stop within one batch; nothing is lost."),
    "already-paused": ("warn", "Sending was already paused."),
    "resumed": ("ok", "Sending resumed: {n} waiting deliveries queued."),
    "not-paused": ("warn", "Sending was not paused."),
    "retried": ("ok", "{n} failed deliveries of edition {edition} set to retry."),
    "resent": ("ok", "Digest queued again (edition {edition}, delivery #{delivery})."),
    "resend-queued": ("warn", "That digest is already on its way (delivery #{delivery})."),
    "ingest-queued": ("ok", "Ingest queued for a worker."),
    "ingested": ("ok", "Ingest finished: {n} papers fetched, {new} new."),
}


def _done_notice(request: Request) -> tuple[str, str] | None:
    params = request.query_params
    if (entry := DONE.get(params.get("done", ""))) is None:
        return None
    # Only digits reach the sentence: the query string is attacker-controlled.
    values = {k: v if v.isdigit() else "?" for k, v in params.items() if k != "done"}
    level, sentence = entry
    try:
        return level, sentence.format_map(_Missing(values))
    except (ValueError, KeyError):
        return None


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def _context(request: Request, operator: Operator, desk: operations.OpsDesk) -> dict[str, Any]:
    rt, now = desk.runtime, utcnow()
    snap = desk.snapshot(now=now, worker_timeout=1.0)
    editions: tuple[monitoring.EditionRow, ...] = ()
    history = None
    if snap.source_up("database"):
        try:
            with rt.sessions() as session:
                editions = monitoring.recent_editions(session)
                # The charts need Redis too; while it is down, don't wait on it twice more.
                if snap.source_up("redis"):
                    monitoring.sample_now(
                        redis=rt.redis, sessions=rt.sessions, queues=desk.queues, now=now
                    )
                    history = monitoring.history(session, rt.redis, now=now)
        except Exception:  # the charts are a nicety; the figures above them must still show
            log.exception("ops page: could not read the 24-hour history")
    return {
        "snap": snap,
        "editions": editions,
        "charts": charts(history, queues=desk.queues) if history else None,
        "operator": operator,
        "csrf_token": csrf_token(request, operator),
        "refresh_seconds": REFRESH_SECONDS,
        "describe_run": monitoring.describe_run,
        "ago": monitoring.ago,
        "describe_pause": monitoring.describe_pause,
        "funnel_bar": funnel_bar(snap.funnel),
        "css_href": "/static/papermail.css",
    }


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    env = get_runtime(request).env
    html = env.get_template(f"web/{template}").render(**context)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


@router.get("/ops", response_class=HTMLResponse, include_in_schema=False)
def ops_page(request: Request) -> Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    context = _context(request, operator, get_desk(request))
    return _render(request, "ops.html.j2", notice=_done_notice(request), **context)


@router.get("/ops/panel", response_class=HTMLResponse, include_in_schema=False)
def ops_panel(request: Request) -> Response:
    """The live part of the page, fetched by ops.js every REFRESH_SECONDS."""
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    return _render(request, "_ops_panel.html.j2", **_context(request, operator, get_desk(request)))


@router.get("/ops/status.json", include_in_schema=False)
def ops_json(request: Request) -> Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    snap = get_desk(request).snapshot(now=utcnow(), worker_timeout=1.0)
    return JSONResponse(snap.as_dict(), headers={"Cache-Control": "no-store"})


@router.get("/ops/static/{name}", include_in_schema=False)
def ops_static(name: str, request: Request) -> Response:
    types = {"ops.css": "text/css; charset=utf-8", "ops.js": "text/javascript; charset=utf-8"}
    if name not in types:
        return _plain(404, "Not found.\n")
    path = get_runtime(request).settings.templates_dir / "web" / name
    return Response(
        path.read_bytes(), media_type=types[name], headers={"Cache-Control": "public, max-age=300"}
    )


# --- actions --------------------------------------------------------------------------------


def _action_gate(request: Request, token: str) -> Operator | Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    if not csrf_ok(request, operator, token):
        log.warning(
            "ops action refused: bad or missing CSRF token", extra={"path": request.url.path}
        )
        return _refused(
            request,
            operator,
            "This form had expired or did not come from this "
            "page, so nothing was done. Please try again.",
            status=403,
        )
    return operator


def _refused(request: Request, operator: Operator, message: str, *, status: int) -> Response:
    context = _context(request, operator, get_desk(request))
    return _render(request, "ops.html.j2", status=status, notice=("error", message), **context)


def _back(done: str, **values: int | None) -> RedirectResponse:
    query = "&".join(f"{k}={v}" for k, v in values.items() if v is not None)
    return RedirectResponse(
        f"/ops?done={done}" + (f"&{query}" if query else "") + "#top", status_code=303
    )


@router.post("/ops/pause", include_in_schema=False)
def pause(request: Request, csrf_token: str = Form(""), reason: str = Form("")) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    rt = get_runtime(request)
    note = reason or f"by {operator.name}"
    changed = operations.pause(rt.redis, now=utcnow(), reason=note)
    return _back("paused" if changed else "already-paused")


@router.post("/ops/resume", include_in_schema=False)
def resume(request: Request, csrf_token: str = Form("")) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    desk = get_desk(request)
    with desk.runtime.sessions() as session:
        queued = operations.resume(
            desk.runtime.redis,
            session,
            now=utcnow(),
            batch_size=desk.runtime.settings.batch_size,
            publish=desk.publish,
        )
    return _back("not-paused") if queued is None else _back("resumed", n=queued)


@router.post("/ops/retry-failed", include_in_schema=False)
def retry_failed(request: Request, csrf_token: str = Form(""), edition: str = Form("")) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    if not edition.isdigit():
        return _refused(request, operator, "Choose an edition to retry.", status=400)
    desk, now = get_desk(request), utcnow()
    try:
        with desk.runtime.sessions() as session:
            count = operations.retry_failed(session, edition_id=int(edition), now=now)
    except operations.OperationRefused as exc:
        return _refused(request, operator, str(exc), status=404)
    desk.dispatch_due(now=now)
    return _back("retried", n=count, edition=int(edition))


@router.post("/ops/resend", include_in_schema=False)
def resend(
    request: Request, csrf_token: str = Form(""), email: str = Form(""), edition: str = Form("")
) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    if edition and not edition.isdigit():
        return _refused(
            request,
            operator,
            "The edition must be a number (or empty for the subscriber's latest).",
            status=400,
        )
    desk = get_desk(request)
    try:
        with desk.runtime.sessions() as session:
            subscriber = find(session, email[:320])
            if subscriber is None:
                return _refused(request, operator, "No subscriber with that address.", status=404)
            result = operations.resend(
                session,
                subscriber=subscriber,
                edition_id=int(edition) if edition else None,
                now=utcnow(),
                publish=desk.publish,
            )
    except InvalidEmail:
        return _refused(request, operator, "That is not an email address.", status=400)
    except operations.OperationRefused as exc:
        return _refused(request, operator, str(exc), status=409)
    if result.action == "already_queued":
        return _back("resend-queued", delivery=result.delivery_id)
    return _back("resent", edition=result.edition_id, delivery=result.delivery_id)


@router.post("/ops/reingest", include_in_schema=False)
def reingest(request: Request, csrf_token: str = Form("")) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    try:
        result = get_desk(request).reingest()
    except Exception as exc:  # a failed embedded ingest: say so on the page, keep serving
        log.warning("ops reingest failed: %s", exc)
        return _refused(request, operator, f"Ingest failed, nothing was written: {exc}", status=502)
    if result.queued:
        return _back("ingest-queued")
    return _back("ingested", n=result.fetched, new=result.inserted)


# --- machines -------------------------------------------------------------------------------


def _registry(request: Request) -> CollectorRegistry:
    registry = getattr(request.app.state, "ops_metrics", None)
    if registry is None:
        desk = get_desk(request)
        registry = metrics.make_registry(
            # A scrape must stay fast: a short worker ping (Prometheus times out at 10 s).
            snapshot=lambda: desk.snapshot(now=utcnow(), worker_timeout=0.5),
            send_totals=lambda: metrics.read_send_totals(desk.runtime.redis),
        )
        request.app.state.ops_metrics = registry
    return registry


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    body = metrics.render(_registry(request))
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})


@router.get("/readyz", include_in_schema=False)
def readyz(request: Request) -> Response:
    """Ready to serve: the database and Redis both answer (load balancers poll this)."""
    rt = get_runtime(request)
    checks = {"database": _probe(lambda: _db_answers(rt)), "redis": _probe(rt.redis.ping)}
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", **checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


def _db_answers(rt: Runtime) -> bool:
    with rt.sessions() as session:
        return session.execute(text("SELECT 1")).scalar() == 1


def _probe(check: Any) -> str:
    try:
        return "ok" if check() else "failing"
    except Exception as exc:
        log.warning("readiness check failed: %s", type(exc).__name__)
        return "failing"


# --- charts: geometry here, SVG markup in templates/web/_ops_charts.html.j2 -----------------


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str  # the hover text: "13:00-14:00 UTC: 120"


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    points: str  # "x,y x,y ..." for <polyline>
    css: str
    latest: int


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    summary: str  # the chart in one sentence, for screen readers and the <title>
    css: str
    bars: tuple[Bar, ...] = ()
    lines: tuple[Line, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    x_ticks: tuple[Tick, ...] = ()
    width: int = 480
    height: int = 170
    left: int = 44
    top: int = 10
    bottom: int = 22
    right: int = 8

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> int:
        return self.top + self.plot_h


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power >= value:
                return step * power
        power *= 10


def _y_ticks(chart: Chart, top_value: int) -> tuple[Tick, ...]:
    return tuple(
        Tick(at=chart.baseline - chart.plot_h * f, label=f"{int(top_value * f):,}")
        for f in (0, 0.5, 1)
    )


def _hour_ticks(chart: Chart, hours: tuple[dt.datetime, ...]) -> tuple[Tick, ...]:
    slot = chart.plot_w / len(hours)
    return tuple(
        Tick(at=chart.left + slot * (i + 0.5), label=f"{h:%H}:00")
        for i, h in enumerate(hours)
        if i % 6 == len(hours) % 6  # four labels, the last on the current hour
    )


def bar_chart(
    *,
    id: str,
    title: str,
    css: str,
    unit: str,
    hours: tuple[dt.datetime, ...],
    values: tuple[int, ...],
) -> Chart:
    chart = Chart(id=id, title=title, css=css, summary="")
    top_value = nice_ceiling(max(values, default=0))
    slot = chart.plot_w / max(1, len(values))
    bars = []
    for i, (hour, value) in enumerate(zip(hours, values, strict=True)):
        h = chart.plot_h * value / top_value
        bars.append(
            Bar(
                x=chart.left + slot * i + 1,
                y=chart.baseline - h,
                w=max(1.0, slot - 2),
                h=h,
                title=f"{hour:%H}:00-{hour + dt.timedelta(hours=1):%H}:00 UTC: {value:,} {unit}",
            )
        )
    total, peak = sum(values), max(values, default=0)
    summary = f"{title}: {total:,} {unit} in 24 hours, at most {peak:,} in one hour."
    return Chart(
        id=id,
        title=title,
        css=css,
        summary=summary,
        bars=tuple(bars),
        y_ticks=_y_ticks(chart, top_value),
        x_ticks=_hour_ticks(chart, hours),
    )


def line_chart(
    *,
    id: str,
    title: str,
    hours: tuple[dt.datetime, ...],
    samples: tuple[monitoring.Sample, ...],
    queues: tuple[str, ...],
) -> Chart:
    chart = Chart(id=id, title=title, css="queues", summary="")
    start, span = hours[0], dt.timedelta(hours=len(hours))
    top_value = nice_ceiling(max((max(s.queues.values(), default=0) for s in samples), default=0))
    lines = []
    for index, queue in enumerate(queues):
        points = " ".join(
            f"{chart.left + chart.plot_w * ((s.at - start) / span):.1f},"
            f"{chart.baseline - chart.plot_h * s.queues.get(queue, 0) / top_value:.1f}"
            for s in samples
        )
        latest = samples[-1].queues.get(queue, 0) if samples else 0
        lines.append(
            Line(
                name=queue.removeprefix("papermail."),
                points=points,
                css=f"series-{index}",
                latest=latest,
            )
        )
    summary = (
        f"{title}: {len(samples)} samples; now "
        + ", ".join(f"{line.name} {line.latest:,}" for line in lines)
        + "."
    )
    return Chart(
        id=id,
        title=title,
        css="queues",
        summary=summary,
        lines=tuple(lines),
        y_ticks=_y_ticks(chart, top_value),
        x_ticks=_hour_ticks(chart, hours),
    )


def charts(history: monitoring.History, *, queues: tuple[str, ...]) -> tuple[Chart, ...]:
    return (
        bar_chart(
            id="sent",
            title="Sent per hour",
            css="sent",
            unit="sent",
            hours=history.hours,
            values=history.sent,
        ),
        line_chart(
            id="queues",
            title="Queue depth",
            hours=history.hours,
            samples=history.queue_samples,
            queues=queues,
        ),
        bar_chart(
            id="failed",
            title="Failures per hour",
            css="failed",
            unit="failed",
            hours=history.hours,
            values=history.failed,
        ),
    )


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    x: float
    w: float
    count: int


def funnel_bar(counts: dict[str, int], *, width: int = 1000) -> tuple[Segment, ...]:
    """Today's funnel as a stacked bar: one segment per non-empty status, in FUNNEL order."""
    total = sum(counts.values())
    segments, x = [], 0.0
    for name in monitoring.FUNNEL:
        n = counts.get(name, 0)
        if n and total:
            w = width * n / total
            segments.append(Segment(name=name, x=x, w=w, count=n))
            x += w
    return tuple(segments)
