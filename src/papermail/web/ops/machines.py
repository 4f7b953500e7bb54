"""For machines: Prometheus metrics (/metrics, behind the operator's sign-in) and readiness
(/readyz, always open: load balancers poll it)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from papermail.ops import metrics, send_tally
from papermail.web.ops import auth
from papermail.web.ops.routes import OpsContext, get_ops
from papermail.wiring import Wiring

log = logging.getLogger(__name__)
router = APIRouter()


def make_registry(ops: OpsContext) -> CollectorRegistry:
    """What /metrics serves for this process."""
    w = ops.wiring
    if w.settings.embedded:
        # Embedded: the sends were made by another process (`papermail demo`) or inline,
        # and this process's fakeredis has no workers' tally: count them from the ledger.
        return metrics.make_registry(
            snapshot=lambda: ops.snapshot(worker_timeout=0.5),
            send_totals=lambda: send_tally.ledger_send_totals(w.sessions),
            send_source="database",
            sources=ops.sources,
        )
    return metrics.make_registry(
        # A scrape must stay fast: a short worker ping (Prometheus times out at 10 s).
        snapshot=lambda: ops.snapshot(worker_timeout=0.5),
        send_totals=lambda: send_tally.read_send_totals(w.redis),
        send_source="redis",
        sources=ops.sources,
    )


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    w = get_ops(request).wiring
    operator = auth.gate(request, w.settings, w.redis)
    if isinstance(operator, Response):
        return operator
    body = metrics.render(request.app.state.ops_metrics)
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})


@router.get("/readyz", include_in_schema=False)
def readyz(request: Request) -> Response:
    """Ready to serve: the database and Redis both answer (load balancers poll this)."""
    w = get_ops(request).wiring
    checks = {"database": _probe(lambda: _db_answers(w)), "redis": _probe(w.redis.ping)}
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", **checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


def _db_answers(w: Wiring) -> bool:
    with w.sessions() as session:
        return session.execute(text("SELECT 1")).scalar() == 1


def _probe(check: Any) -> str:
    try:
        return "ok" if check() else "failing"
    except Exception as exc:
        log.warning("readiness check failed: %s", type(exc).__name__)
        return "failing"
