"""The operator's dashboard (/ops); Prometheus metrics (/metrics) and readiness (/readyz) are
machines.py's.

``attach_ops(app, wiring=..., dispatcher=..., celery=...)`` includes the router and
gives it what it needs: the process's Wiring, where actions dispatch work, and the
Celery app to watch (None when embedded).

Who gets in is auth.py's business (basic auth); the charts'
geometry is charts.py's. Actions are POST forms carrying a CSRF token bound to the
operator (auth.csrf_ok). Success redirects back to /ops (POST-redirect-GET); a
refusal re-renders the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from papermail import ingest_stages, stages
from papermail.clock import utcnow
from papermail.dispatch import QUEUES, Dispatcher
from papermail.ops import actions as operations
from papermail.ops import bounce_rates, monitoring, phrasing
from papermail.ops import history as ops_history
from papermail.ops.broker import CeleryLike
from papermail.ops.http_metrics import HttpMetrics
from papermail.ops.sources import SourceHealth, read_source_health, span
from papermail.subscribers.subscriptions import InvalidEmail, find
from papermail.web.ops import auth
from papermail.web.ops.auth import Operator
from papermail.web.ops.bounce_chart import BounceChart, bounce_chart
from papermail.web.ops.charts import charts, funnel_bar
from papermail.wiring import Wiring

log = logging.getLogger(__name__)
router = APIRouter()

REFRESH_SECONDS = 15
# The same policy as the subscriber pages: our own CSS and JS files, nothing inline.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
NO_STORE = MappingProxyType({"Cache-Control": "no-store", "Content-Security-Policy": CSP})


@dataclass(frozen=True, slots=True)
class OpsContext:
    wiring: Wiring
    dispatcher: Dispatcher
    celery: CeleryLike | None  # None when embedded: no workers to ask

    def snapshot(self, *, worker_timeout: float = 1.0) -> monitoring.Snapshot:
        return stages.snapshot(
            self.wiring, celery=self.celery, now=utcnow(), worker_timeout=worker_timeout
        )

    def sources(self, snap: monitoring.Snapshot) -> tuple[SourceHealth, ...] | None:
        """Each paper source's health as of ``snap``; None when the database is down (the
        snapshot says so already: don't wait on it a second time)."""
        if not snap.source_up("database"):
            return None
        return read_source_health(self.wiring.sessions, now=snap.taken_at)


def attach_ops(
    app: FastAPI, *, wiring: Wiring, dispatcher: Dispatcher, celery: CeleryLike | None
) -> HttpMetrics:
    """Include /ops, /metrics and /readyz; returns the request metrics for the app's
    middleware to feed (web/app.py), registered with what /metrics serves."""
    # /metrics and /readyz (machines.py) and the subscriber desk (/ops/subscribers) build
    # on this module: imported here, not at the top, so none imports another at load time.
    from papermail.web.ops.desk import router as desk_router
    from papermail.web.ops.desk_csv import router as desk_csv_router
    from papermail.web.ops.machines import make_registry
    from papermail.web.ops.machines import router as machines_router

    ops = OpsContext(wiring=wiring, dispatcher=dispatcher, celery=celery)
    app.state.ops = ops
    app.state.ops_metrics = make_registry(ops)
    app.include_router(router)
    app.include_router(machines_router)
    app.include_router(desk_router)
    app.include_router(desk_csv_router)
    return HttpMetrics(app.state.ops_metrics)


def get_ops(request: Request) -> OpsContext:
    ops: OpsContext = request.app.state.ops
    return ops


def _gate(request: Request) -> Operator | Response:
    w = get_ops(request).wiring
    return auth.gate(request, w.settings, w.redis)


# --- pages ----------------------------------------------------------------------------------

DONE = MappingProxyType(
    {
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
)


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


def _context(request: Request, operator: Operator) -> dict[str, Any]:
    ops, now = get_ops(request), utcnow()
    w = ops.wiring
    snap = ops.snapshot()
    editions: tuple[monitoring.EditionRow, ...] = ()
    history = None
    bounces: BounceChart | None = None
    if snap.source_up("database"):
        try:
            with w.sessions() as session:
                editions = monitoring.recent_editions(session)
                bounces = bounce_chart(
                    bounce_rates.daily(session, today=now.date()),
                    recent=bounce_rates.recent(session),
                )
                # The charts need Redis too; while it is down, don't wait on it twice more.
                if snap.source_up("redis"):
                    ops_history.sample_now(
                        redis=w.redis, sessions=w.sessions, queues=QUEUES, now=now
                    )
                    history = ops_history.history(session, w.redis, now=now)
        except Exception:  # the charts are a nicety; the figures above them must still show
            log.exception("ops page: could not read the 24-hour history")
    return {
        "snap": snap,
        "sources": ops.sources(snap),
        "editions": editions,
        "charts": charts(history, queues=QUEUES) if history else None,
        "bounces": bounces,
        "operator": operator,
        "csrf_token": auth.csrf_token(w.settings, operator),
        "refresh_seconds": REFRESH_SECONDS,
        "describe_run": phrasing.describe_run,
        "ago": phrasing.ago,
        "span": span,
        "describe_pause": phrasing.describe_pause,
        "funnel_bar": funnel_bar(snap.funnel),
        "css_href": "/static/papermail.css",
    }


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    env = get_ops(request).wiring.env
    html = env.get_template(f"web/{template}").render(**context)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


@router.get("/ops", response_class=HTMLResponse, include_in_schema=False)
def ops_page(request: Request) -> Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    context = _context(request, operator)
    return _render(request, "ops.html.j2", notice=_done_notice(request), **context)


@router.get("/ops/panel", response_class=HTMLResponse, include_in_schema=False)
def ops_panel(request: Request) -> Response:
    """The live part of the page, fetched by ops.js every REFRESH_SECONDS."""
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    return _render(request, "_ops_panel.html.j2", **_context(request, operator))


@router.get("/ops/status.json", include_in_schema=False)
def ops_json(request: Request) -> Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    ops = get_ops(request)
    snap = ops.snapshot()
    sources = ops.sources(snap)
    data = snap.as_dict() | {"sources": None if sources is None else [s.as_dict() for s in sources]}
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


@router.get("/ops/static/{name}", include_in_schema=False)
def ops_static(name: str, request: Request) -> Response:
    types = {"ops.css": "text/css; charset=utf-8", "ops.js": "text/javascript; charset=utf-8"}
    if name not in types:
        return auth.plain(404, "Not found.\n")
    path = get_ops(request).wiring.settings.templates_dir / "web" / name
    return Response(
        path.read_bytes(), media_type=types[name], headers={"Cache-Control": "public, max-age=300"}
    )


# --- actions --------------------------------------------------------------------------------


def _action_gate(request: Request, token: str) -> Operator | Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    if not auth.csrf_ok(request, get_ops(request).wiring.settings, operator, token):
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
    context = _context(request, operator)
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
    w = get_ops(request).wiring
    note = reason or f"by {operator.name}"
    changed = operations.pause(w.redis, now=utcnow(), reason=note)
    return _back("paused" if changed else "already-paused")


@router.post("/ops/resume", include_in_schema=False)
def resume(request: Request, csrf_token: str = Form("")) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    ops = get_ops(request)
    with ops.wiring.sessions() as session:
        queued = operations.resume(
            ops.wiring.redis,
            session,
            now=utcnow(),
            batch_size=ops.wiring.settings.batch_size,
            publish=ops.dispatcher.send_batch,
        )
    return _back("not-paused") if queued is None else _back("resumed", n=queued)


@router.post("/ops/retry-failed", include_in_schema=False)
def retry_failed(request: Request, csrf_token: str = Form(""), edition: str = Form("")) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    if not edition.isdigit():
        return _refused(request, operator, "Choose an edition to retry.", status=400)
    ops, now = get_ops(request), utcnow()
    try:
        with ops.wiring.sessions() as session:
            count = operations.retry_failed(session, edition_id=int(edition), now=now)
    except operations.OperationRefused as exc:
        return _refused(request, operator, str(exc), status=404)
    stages.redispatch(ops.wiring, dispatcher=ops.dispatcher, now=now)
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
    ops = get_ops(request)
    try:
        with ops.wiring.sessions() as session:
            subscriber = find(session, email[:320])
            if subscriber is None:
                return _refused(request, operator, "No subscriber with that address.", status=404)
            result = operations.resend(
                session,
                subscriber=subscriber,
                edition_id=int(edition) if edition else None,
                now=utcnow(),
                publish=ops.dispatcher.send_batch,
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
    ops = get_ops(request)
    log.warning("operator %s re-ran ingest", operator.name)
    if ops.dispatcher.queued:
        ops.dispatcher.ingest()
        return _back("ingest-queued")
    w = ops.wiring
    try:
        report = ingest_stages.ingest(
            w, days=ingest_stages.default_ingest_days(w, today=utcnow().date())
        )
    except Exception as exc:  # a failed embedded ingest: say so on the page, keep serving
        log.warning("ops reingest failed: %s", exc)
        return _refused(request, operator, f"Ingest failed, nothing was written: {exc}", status=502)
    return _back("ingested", n=report.fetched, new=report.inserted)
