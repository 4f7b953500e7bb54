"""The subscriber desk on /ops: /ops/subscribers and one page per subscriber.

Behind the same sign-in as the dashboard (auth.gate). Pages are GETs that change
nothing (CSV downloads included); every action is a POST form carrying the operator's
CSRF token (auth.csrf_ok), answered with a redirect back (POST-redirect-GET) or, when
refused, the page again with the reason. Domain rules live in papermail.subscribers
(desk, imports, exports); this module parses, calls, renders.

An import is two POSTs: the upload shows what it would do (nothing changes), the
confirmation does it. Between the two the file waits in Redis under a random key for
``IMPORT_TTL_SECONDS``, bound to the operator, and is deleted when used: never on disk.
Test sends are limited per operator (``TEST_SEND_LIMIT`` per ``TEST_SEND_WINDOW_SECONDS``).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

import redis as redis_lib
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.delivery.base import DeliveryError
from papermail.models import Subscriber, SubscriberStatus
from papermail.ops.throttle import FixedWindow
from papermail.subscribers import audit, desk, exports, imports, trial_send
from papermail.subscribers.subscriptions import InvalidEmail
from papermail.web import csrf
from papermail.web.ops import auth
from papermail.web.ops.auth import Operator
from papermail.web.ops.routes import NO_STORE, OpsContext, get_ops

log = logging.getLogger(__name__)
router = APIRouter()

BASE = "/ops/subscribers"
IMPORT_PATH = f"{BASE}/import"
# The upload's whole body: the file at its limit plus the form around it. web/app.py lets
# this path (only) send that much; a file over the import's limit but under this is
# refused here, in words. At most Starlette's in-memory spool size (1 MiB), so the upload
# is never written to a temporary file.
IMPORT_MAX_BODY = 1024 * 1024
IMPORT_TTL_SECONDS = 15 * 60
IMPORT_PREFIX = "papermail:ops:import:"
PREVIEW_SHOWN = 200  # rows of each list an import preview shows; the counts are complete
TEST_SEND_LIMIT = 5
TEST_SEND_WINDOW_SECONDS = 10 * 60
TEST_SEND_PREFIX = "papermail:ops:test-sends"

DONE = MappingProxyType(
    {
        "suppressed": ("ok", "Suppressed: nothing more is mailed to this address."),
        "unsuppressed-active": ("ok", "Unsuppressed: active again, as it was before."),
        "unsuppressed-pending": (
            "ok",
            "Unsuppressed: pending, as it was before (never confirmed).",
        ),
        "unsuppressed-unsubscribed": (
            "ok",
            "Unsuppressed: unsubscribed, as it was before. Only they can come back.",
        ),
        "test-sent": ("ok", "Test digest sent."),
        "imported": ("ok", "Imported {n} subscribers; {skipped} skipped."),
        "imported-pending": (
            "ok",
            "Imported {n} subscribers as pending; {skipped} skipped. "
            "{emailed} confirmation emails sent or queued.",
        ),
        "imported-unsent": (
            "warn",
            "Imported {n} subscribers as pending; {skipped} skipped. {failed} confirmation "
            "emails could not be sent (see the log): they stay pending.",
        ),
    }
)


# --- plumbing -------------------------------------------------------------------------------


def _gate(request: Request) -> Operator | Response:
    w = get_ops(request).wiring
    return auth.gate(request, w.settings, w.redis)


def _action_gate(request: Request, token: str) -> Operator | Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    if not auth.csrf_ok(request, get_ops(request).wiring.settings, operator, token):
        log.warning(
            "desk action refused: bad or missing CSRF token", extra={"path": request.url.path}
        )
        message = (
            "This form had expired or did not come from this page, so nothing was done. "
            "Please try again."
        )
        return _list(request, operator, notice=("error", message), code=403)
    return operator


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    ops = get_ops(request)
    operator: Operator = context["operator"]
    html = ops.wiring.env.get_template(f"web/{template}").render(
        csrf_token=auth.csrf_token(ops.wiring.settings, operator),
        css_href="/static/papermail.css",
        statuses=[s.value for s in SubscriberStatus],
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _notice(request: Request) -> tuple[str, str] | None:
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


def _status(value: str) -> SubscriberStatus | None:
    try:
        return SubscriberStatus(value) if value else None
    except ValueError:
        return None


def _page_number(value: str) -> int:
    return int(value) if value.isdigit() and len(value) < 7 else 1


# --- the list -------------------------------------------------------------------------------


@router.get(BASE, response_class=HTMLResponse, include_in_schema=False)
def subscribers_page(request: Request, q: str = "", status: str = "", page: str = "1") -> Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    return _list(request, operator, q=q, status=status, page=page)


def _list(
    request: Request,
    operator: Operator,
    *,
    q: str = "",
    status: str = "",
    page: str = "1",
    notice: tuple[str, str] | None = None,
    code: int = 200,
    upload: dict[str, str] | None = None,
) -> Response:
    chosen = _status(status)
    with get_ops(request).wiring.sessions() as session:
        found = desk.search(
            session, query=q[: desk.MAX_QUERY], status=chosen, page=_page_number(page)
        )

    def page_url(number: int) -> str:
        query = {"q": q, "status": chosen.value if chosen else "", "page": str(number)}
        return f"{BASE}?" + urlencode({k: v for k, v in query.items() if v})

    return _render(
        request,
        "ops_subscribers.html.j2",
        status=code,
        operator=operator,
        notice=notice or _notice(request),
        q=q[: desk.MAX_QUERY],
        chosen=chosen.value if chosen else "",
        found=found,
        page_url=page_url,
        upload=upload or {"mode": "pending", "consent_source": ""},
        max_bytes=imports.MAX_IMPORT_BYTES,
        max_rows=imports.MAX_IMPORT_ROWS,
    )


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
    operator = _gate(request)
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
    chosen = _status(status)
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
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    upload = {"mode": "active" if mode == "active" else "pending", "consent_source": consent_source}
    if file is None or not file.filename:
        return _list(
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
        return _list(request, operator, notice=("error", str(exc)), code=400, upload=upload)
    key = ""
    if plan.ready and plan.additions:
        key = _keep_upload(
            ops, operator, data, active=upload["mode"] == "active", consent=consent_source
        )
    return _render(
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
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    ops = get_ops(request)
    kept = _take_upload(ops, key)
    if kept is None or kept.get("operator") != operator.name:
        message = (
            f"That import preview has expired ({IMPORT_TTL_SECONDS // 60} minutes) or was "
            "used already: nothing was imported. Upload the file again."
        )
        return _list(request, operator, notice=("error", message), code=409)
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
        return _list(request, operator, notice=("error", str(exc)), code=400)
    counts = {"n": len(result.added), "skipped": len(result.skipped)}
    if result.status is not SubscriberStatus.PENDING:
        return _back(BASE, "imported", **counts)
    failed = imports.send_confirmations(result.added, send=ops.dispatcher.send_confirmation)
    if failed:
        return _back(BASE, "imported-unsent", failed=len(failed), **counts)
    return _back(BASE, "imported-pending", emailed=len(result.added), **counts)


def _take_upload(ops: OpsContext, key: str) -> dict[str, Any] | None:
    if not key or len(key) > 64:
        return None
    raw = ops.wiring.redis.getdel(IMPORT_PREFIX + key)  # used once, whatever happens next
    if raw is None:
        return None
    kept = json.loads(raw)
    return kept if isinstance(kept, dict) else None


def _back(path: str, done: str, **values: int) -> RedirectResponse:
    query = urlencode({"done": done, **{k: str(v) for k, v in values.items()}})
    return RedirectResponse(f"{path}?{query}", status_code=303)


# --- one subscriber -------------------------------------------------------------------------


def _subscriber_page(
    request: Request,
    operator: Operator,
    session: Session,
    subscriber: Subscriber,
    *,
    notice: tuple[str, str] | None = None,
    code: int = 200,
    form: dict[str, str] | None = None,
) -> Response:
    return _render(
        request,
        "ops_subscriber.html.j2",
        status=code,
        operator=operator,
        notice=notice or _notice(request),
        p=desk.profile(session, subscriber),
        form=form or {},
        test_limit=TEST_SEND_LIMIT,
        test_window_minutes=TEST_SEND_WINDOW_SECONDS // 60,
    )


def _missing(request: Request, operator: Operator) -> Response:
    return _list(request, operator, notice=("error", "No such subscriber."), code=404)


@router.get(BASE + "/{subscriber_id:int}", response_class=HTMLResponse, include_in_schema=False)
def subscriber_page(request: Request, subscriber_id: int) -> Response:
    operator = _gate(request)
    if isinstance(operator, Response):
        return operator
    with get_ops(request).wiring.sessions() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return _missing(request, operator)
        return _subscriber_page(request, operator, session, subscriber)


@router.post(BASE + "/{subscriber_id:int}/suppress", include_in_schema=False)
def suppress(
    request: Request, subscriber_id: int, csrf_token: str = Form(""), reason: str = Form("")
) -> Response:
    return _suppression(request, subscriber_id, csrf_token, reason, lift=False)


@router.post(BASE + "/{subscriber_id:int}/unsuppress", include_in_schema=False)
def unsuppress(
    request: Request, subscriber_id: int, csrf_token: str = Form(""), reason: str = Form("")
) -> Response:
    return _suppression(request, subscriber_id, csrf_token, reason, lift=True)


def _suppression(
    request: Request, subscriber_id: int, token: str, reason: str, *, lift: bool
) -> Response:
    operator = _action_gate(request, token)
    if isinstance(operator, Response):
        return operator
    with session_scope(get_ops(request).wiring.sessions) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return _missing(request, operator)
        try:
            if lift:
                to = desk.unsuppress(
                    session, subscriber, actor=operator.name, reason=reason, now=utcnow()
                )
                done = f"unsuppressed-{to.value}"
            else:
                desk.suppress(session, subscriber, actor=operator.name, reason=reason, now=utcnow())
                done = "suppressed"
        except audit.DeskRefused as exc:
            session.rollback()
            which = "unsuppress" if lift else "suppress"
            return _subscriber_page(
                request,
                operator,
                session,
                subscriber,
                notice=("error", str(exc)),
                code=400 if not reason.strip() else 409,
                form={f"{which}_reason": reason[: audit.MAX_REASON * 2]},
            )
    return _back(f"{BASE}/{subscriber_id}", done)


@router.post(BASE + "/{subscriber_id:int}/test-send", include_in_schema=False)
def test_send(
    request: Request,
    subscriber_id: int,
    csrf_token: str = Form(""),
    to: str = Form(""),
    edition: str = Form(""),
) -> Response:
    operator = _action_gate(request, csrf_token)
    if isinstance(operator, Response):
        return operator
    w = get_ops(request).wiring
    with session_scope(w.sessions) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return _missing(request, operator)

        def refuse(message: str, code: int) -> Response:
            session.rollback()
            form = {"to": to[:320], "edition": edition[:12]}
            return _subscriber_page(
                request,
                operator,
                session,
                subscriber,
                notice=("error", message),
                code=code,
                form=form,
            )

        if edition and not edition.isdigit():
            return refuse("The edition must be a number (or empty for their latest).", 400)
        if (wait := _test_send_budget(w.redis, operator)) is not None:
            return refuse(
                f"At most {TEST_SEND_LIMIT} test sends in {TEST_SEND_WINDOW_SECONDS // 60} "
                f"minutes: try again in {wait} seconds.",
                429,
            )
        try:
            trial_send.send_test(
                session,
                subscriber,
                to=to,
                actor=operator.name,
                now=utcnow(),
                env=w.env,
                links=w.links,
                identity=w.identity,
                backend=w.backend,
                list_name=w.settings.list_name,
                default_max_papers=w.settings.default_max_papers,
                sign=w.dkim,
                edition_id=int(edition) if edition else None,
            )
        except InvalidEmail as exc:
            return refuse(f"Send it to an email address: {exc}", 400)
        except LookupError as exc:
            return refuse(str(exc), 404)
        except DeliveryError as exc:
            log.warning("test send for subscriber %s failed: %s", subscriber_id, exc)
            return refuse(f"The mail server did not take it: {exc}", 502)
    return _back(f"{BASE}/{subscriber_id}", "test-sent")


def _test_send_budget(redis: redis_lib.Redis, operator: Operator) -> int | None:
    """Seconds to wait when over the limit, else None (and the attempt is counted)."""
    budget = FixedWindow(
        redis,
        prefix=TEST_SEND_PREFIX,
        limit=TEST_SEND_LIMIT,
        window_seconds=TEST_SEND_WINDOW_SECONDS,
    )
    try:
        if (wait := budget.retry_after(operator.name)) is not None:
            return wait
        budget.hit(operator.name)
    except redis_lib.RedisError as exc:  # the limit cannot be read: don't send unlimited
        log.warning("test-send limit unavailable (%s): refusing", type(exc).__name__)
        return TEST_SEND_WINDOW_SECONDS
    return None


@router.get("/ops/desk.css", include_in_schema=False)
def stylesheet(request: Request) -> Response:
    path = get_ops(request).wiring.settings.templates_dir / "web" / "desk.css"
    return Response(
        path.read_bytes(),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )
