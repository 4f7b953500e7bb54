"""The subscriber desk's CSV: export (subscribers, the suppression list) and import.

Downloads are GETs that change nothing, for the desk's own pages only (a cross-site fetch
is refused). An import is two POSTs: the upload shows what it would do (nothing changes),
the confirmation does it. Between the two the file waits in Redis under a random key for
``IMPORT_TTL_SECONDS``, bound to the operator, and is deleted when used: never on disk.
Domain rules live in papermail.subscribers.imports and .exports.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.models import SubscriberStatus
from papermail.subscribers import exports, imports
from papermail.web import csrf
from papermail.web.ops import auth
from papermail.web.ops.auth import Operator
from papermail.web.ops.desk import (
    BASE,
    action_gate,
    back_to,
    gate,
    list_page,
    parse_status,
    render,
)
from papermail.web.ops.routes import OpsContext, get_ops

log = logging.getLogger(__name__)
router = APIRouter()

IMPORT_PATH = f"{BASE}/import"
# The upload's whole body: the file at its limit plus the form around it. web/app.py lets
# this path (only) send that much; a file over the import's limit but under this is
# refused here, in words. At most Starlette's in-memory spool size (1 MiB), so the upload
# is never written to a temporary file.
IMPORT_MAX_BODY = 1024 * 1024
IMPORT_TTL_SECONDS = 15 * 60
IMPORT_PREFIX = "papermail:ops:import:"
PREVIEW_SHOWN = 200  # rows of each list an import preview shows; the counts are complete


# --- CSV ------------------------------------------------------------------------------------


def _csv(request: Request, name: str, lines: Any) -> Response:
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _download_gate(request: Request) -> Operator | Response:
    operator = gate(request)
    if isinstance(operator, Response):
        return operator
    # A download changes nothing, but it is every address we have: only for our own pages.
    if csrf.cross_site(request.headers.get("sec-fetch-site")):
        return auth.plain(403, "Download it from the subscriber desk.\n")
    return operator


@router.get(f"{BASE}/export.csv", include_in_schema=False)
def export_csv(request: Request, status: str = "") -> Response:
    operator = _download_gate(request)
    if isinstance(operator, Response):
        return operator
    chosen = parse_status(status)
    log.warning("operator %s exported subscribers (%s)", operator.name, chosen or "all")
    sessions = get_ops(request).wiring.sessions

    def lines() -> Iterator[str]:
        with sessions() as session:
            yield from exports.export_subscribers(session, status=chosen)

    name = f"subscribers-{chosen.value if chosen else 'all'}-{utcnow():%Y%m%d}.csv"
    return _csv(request, name, lines())


@router.get(f"{BASE}/suppressed.csv", include_in_schema=False)
def suppressed_csv(request: Request) -> Response:
    operator = _download_gate(request)
    if isinstance(operator, Response):
        return operator
    log.warning("operator %s exported the suppression list", operator.name)
    sessions = get_ops(request).wiring.sessions

    def lines() -> Iterator[str]:
        with sessions() as session:
            yield from exports.export_suppressions(session)

    return _csv(request, f"suppression-list-{utcnow():%Y%m%d}.csv", lines())


# --- import ---------------------------------------------------------------------------------


@router.post(IMPORT_PATH, include_in_schema=False)
def import_preview(
    request: Request,
    csrf_token: str = Form(""),
    mode: str = Form("pending"),
    consent_source: str = Form(""),
    file: UploadFile | None = File(None),
) -> Response:
    operator = action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    upload = {"mode": "active" if mode == "active" else "pending", "consent_source": consent_source}
    if file is None or not file.filename:
        return list_page(
            request,
            operator,
            notice=("error", "Choose a CSV file to import."),
            code=400,
            upload=upload,
        )
    data = file.file.read(imports.MAX_IMPORT_BYTES + 1)
    ops = get_ops(request)
    try:
        with ops.wiring.sessions() as session:
            plan = _plan(
                ops, session, data, active=upload["mode"] == "active", consent=consent_source
            )
    except imports.ImportRefused as exc:
        return list_page(request, operator, notice=("error", str(exc)), code=400, upload=upload)
    key = ""
    if plan.ready and plan.additions:
        key = _keep_upload(
            ops, operator, data, active=upload["mode"] == "active", consent=consent_source
        )
    return render(
        request,
        "ops_import_preview.html.j2",
        operator=operator,
        notice=None,
        plan=plan,
        filename=file.filename[:200],
        import_key=key,
        shown=PREVIEW_SHOWN,
        ttl_minutes=IMPORT_TTL_SECONDS // 60,
    )


def _plan(
    ops: OpsContext, session: Session, data: bytes, *, active: bool, consent: str
) -> imports.ImportPlan:
    return imports.plan_import(
        session,
        data,
        active=active,
        consent_source=consent,
        default_max_papers=ops.wiring.settings.default_max_papers,
    )


def _keep_upload(
    ops: OpsContext, operator: Operator, data: bytes, *, active: bool, consent: str
) -> str:
    key = secrets.token_urlsafe(18)
    kept = {
        "operator": operator.name,
        "active": active,
        "consent_source": consent,
        "data": base64.b64encode(data).decode(),
    }
    ops.wiring.redis.set(IMPORT_PREFIX + key, json.dumps(kept), ex=IMPORT_TTL_SECONDS)
    return key


@router.post(f"{IMPORT_PATH}/confirm", include_in_schema=False)
def import_confirm(request: Request, csrf_token: str = Form(""), key: str = Form("")) -> Response:
    operator = action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    ops = get_ops(request)
    kept = _take_upload(ops, key)
    if kept is None or kept.get("operator") != operator.name:
        message = (
            f"That import preview has expired ({IMPORT_TTL_SECONDS // 60} minutes) or was "
            "used already: nothing was imported. Upload the file again."
        )
        return list_page(request, operator, notice=("error", message), code=409)
    try:
        with session_scope(ops.wiring.sessions) as session:
            plan = _plan(
                ops,
                session,
                base64.b64decode(kept["data"]),
                active=bool(kept["active"]),
                consent=str(kept["consent_source"]),
            )
            result = imports.apply_import(session, plan, actor=operator.name, now=utcnow())
    except imports.ImportRefused as exc:
        return list_page(request, operator, notice=("error", str(exc)), code=400)
    counts = {"n": len(result.added), "skipped": len(result.skipped)}
    if result.status is not SubscriberStatus.PENDING:
        return back_to(BASE, "imported", **counts)
    failed = imports.send_confirmations(result.added, send=ops.dispatcher.send_confirmation)
    if failed:
        return back_to(BASE, "imported-unsent", failed=len(failed), **counts)
    return back_to(BASE, "imported-pending", emailed=len(result.added), **counts)


def _take_upload(ops: OpsContext, key: str) -> dict[str, Any] | None:
    if not key or len(key) > 64:
        return None
    raw = ops.wiring.redis.getdel(IMPORT_PREFIX + key)  # used once, whatever happens next
    if raw is None:
        return None
    kept = json.loads(raw)
    return kept if isinstance(kept, dict) else None
