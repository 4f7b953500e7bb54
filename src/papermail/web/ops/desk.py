"""The subscriber desk on /ops: /ops/subscribers and one page per subscriber.

Behind the same sign-in as the dashboard (auth.gate). Pages are GETs that change
nothing (CSV downloads included); every action is a POST form carrying the operator's
CSRF token (auth.csrf_ok), answered with a redirect back (POST-redirect-GET) or, when
refused, the page again with the reason. Domain rules live in papermail.subscribers
(desk, imports, exports); this module parses, calls, renders. CSV export and import:
desk_csv.py. Test sends are limited per operator (``TEST_SEND_LIMIT`` per
``TEST_SEND_WINDOW_SECONDS``).
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

import redis as redis_lib
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.delivery.base import DeliveryError
from papermail.models import Subscriber, SubscriberStatus
from papermail.ops.throttle import FixedWindow
from papermail.subscribers import audit, desk, imports, trial_send
from papermail.subscribers.subscriptions import InvalidEmail
from papermail.web.ops import auth
from papermail.web.ops.auth import Operator
from papermail.web.ops.routes import NO_STORE, get_ops

log = logging.getLogger(__name__)
router = APIRouter()

BASE = "/ops/subscribers"
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


def gate(request: Request) -> Operator | Response:
    w = get_ops(request).wiring
    return auth.gate(request, w.settings, w.redis)


def action_gate(request: Request, token: str) -> Operator | Response:
    operator = gate(request)
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
        return list_page(request, operator, notice=("error", message), code=403)
    return operator


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
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


def parse_status(value: str) -> SubscriberStatus | None:
    try:
        return SubscriberStatus(value) if value else None
    except ValueError:
        return None


def _page_number(value: str) -> int:
    return int(value) if value.isdigit() and len(value) < 7 else 1


# --- the list -------------------------------------------------------------------------------


@router.get(BASE, response_class=HTMLResponse, include_in_schema=False)
def subscribers_page(request: Request, q: str = "", status: str = "", page: str = "1") -> Response:
    operator = gate(request)
    if isinstance(operator, Response):
        return operator
    return list_page(request, operator, q=q, status=status, page=page)


def list_page(
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
    chosen = parse_status(status)
    with get_ops(request).wiring.sessions() as session:
        found = desk.search(
            session, query=q[: desk.MAX_QUERY], status=chosen, page=_page_number(page)
        )

    def page_url(number: int) -> str:
        query = {"q": q, "status": chosen.value if chosen else "", "page": str(number)}
        return f"{BASE}?" + urlencode({k: v for k, v in query.items() if v})

    return render(
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


def back_to(path: str, done: str, **values: int) -> RedirectResponse:
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
    return render(
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
    return list_page(request, operator, notice=("error", "No such subscriber."), code=404)


@router.get(BASE + "/{subscriber_id:int}", response_class=HTMLResponse, include_in_schema=False)
def subscriber_page(request: Request, subscriber_id: int) -> Response:
    operator = gate(request)
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
    operator = action_gate(request, token)
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
    return back_to(f"{BASE}/{subscriber_id}", done)


@router.post(BASE + "/{subscriber_id:int}/test-send", include_in_schema=False)
def test_send(
    request: Request,
    subscriber_id: int,
    csrf_token: str = Form(""),
    to: str = Form(""),
    edition: str = Form(""),
) -> Response:
    operator = action_gate(request, csrf_token)
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
    return back_to(f"{BASE}/{subscriber_id}", "test-sent")


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
