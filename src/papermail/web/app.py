"""The subscriber-facing web app: ``create_app(wiring)``.

    papermail web --host 127.0.0.1 --port 8000

Pages are server-rendered (Jinja2 under templates/web/), work without JavaScript
and share the email's look. Routes are thin: they parse, call a domain function,
render. Tokens travel in URLs, so every response says ``Referrer-Policy:
no-referrer`` and the access log records a hash of a token, never the token.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time

from celery import Celery
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from papermail.clock import utcnow
from papermail.dispatch import Dispatcher
from papermail.ops.http_metrics import HttpMetrics
from papermail.stages import InlineDispatcher
from papermail.subscribers.signup_limits import SignupLimits
from papermail.subscribers.tokens import InvalidToken
from papermail.web import archive, feedback, manage, signup
from papermail.web.context import Clock, Pages, SendConfirmation, WebContext
from papermail.web.csrf import CsrfGuard
from papermail.web.ops import desk_csv
from papermail.web.ops.routes import attach_ops
from papermail.web.webhooks import attach_webhooks
from papermail.wiring import Wiring

log = logging.getLogger(__name__)
access_log = logging.getLogger("papermail.web.access")

MAX_BODY = 64 * 1024  # our forms are a few hundred bytes
# The one upload: the subscriber desk's CSV import (behind /ops sign-in and its CSRF).
# Routes that take more than MAX_BODY: a CSV import, and providers' webhooks (an SNS
# message may be 256 KB; Postmark's can carry the bounced message's content).
WEBHOOK_MAX_BODY = 512 * 1024
LARGE_BODIES = {
    desk_csv.IMPORT_PATH: desk_csv.IMPORT_MAX_BODY,
    "/webhooks/ses": WEBHOOK_MAX_BODY,
    "/webhooks/postmark": WEBHOOK_MAX_BODY,
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_TOKEN_PATH = re.compile(r"^/(confirm|preferences|unsubscribe|feedback)/([^/?#]+)")


def redact(path: str) -> str:
    """'/preferences/<token>' -> '/preferences/#1a2b3c4d': enough to correlate, not to use."""

    def swap(match: re.Match[str]) -> str:
        return f"/{match[1]}/#{hashlib.sha256(match[2].encode()).hexdigest()[:8]}"

    return _TOKEN_PATH.sub(swap, path)


class EdgeMiddleware:
    """Security headers, a request body cap, an access log without tokens, and the
    request metrics (by route template: the path may carry a token)."""

    def __init__(
        self, app: ASGIApp, *, max_body: int = MAX_BODY, http_metrics: HttpMetrics | None = None
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.http_metrics = http_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, seen = time.perf_counter(), 0, 0
        method = scope["method"]
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        max_body = LARGE_BODIES.get(scope["path"], self.max_body)

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_body:  # a chunked body that never declared its length
                raise StarletteHTTPException(413)
            return message

        async def secured_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        try:
            if not declared.isdigit() or int(declared) > max_body:
                await _too_large(secured_send)
            else:
                await self.app(scope, capped_receive, secured_send)
        finally:
            took = time.perf_counter() - started
            access_log.info("%s %s %s %.1fms", method, redact(scope["path"]), status, took * 1000)
            if self.http_metrics is not None:
                # No response started: an exception on its way to the 500 page.
                self.http_metrics.observe(
                    method=method, route=route_template(scope), status=status or 500, seconds=took
                )


def route_template(scope: Scope) -> str | None:
    """The matched route's path template ("/preferences/{token}"), None if none matched."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


class HeadAsGet:
    """HEAD on every GET route: the request runs as GET and the body is dropped, so the
    status and headers (Content-Length included) are exactly GET's. FastAPI registers
    GET routes for GET only, which would answer HEAD with 405. No GET changes state, so
    neither does a HEAD.

    The app gets a copy of the scope (the server's own stays HEAD: it must know to send
    no body); the route the router picked is copied back for the access log and metrics.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = dict(scope, method="GET")

        async def bodiless_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # swallow the chunks; the last message ends the response
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(as_get, receive, bodiless_send)
        finally:
            if "route" in as_get:
                scope["route"] = as_get["route"]


async def _too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"Request too large.\n"})


def create_app(
    wiring: Wiring | None = None,
    *,
    dispatcher: Dispatcher | None = None,
    limits: SignupLimits | None = None,
    clock: Clock = utcnow,
) -> FastAPI:
    """The app for this wiring; ``dispatcher`` is where confirmation emails go (default:
    sent in this process when embedded, queued for the workers otherwise)."""
    if wiring is None:
        from papermail.config import get_settings

        wiring = Wiring(get_settings())
    settings = wiring.settings
    celery = None if settings.embedded else _celery_app(wiring)
    if dispatcher is None:
        dispatcher = (
            InlineDispatcher(wiring, clock=clock) if celery is None else _celery_dispatcher(celery)
        )

    confirm = dispatcher.send_confirmation if dispatcher.queued else _quietly(dispatcher)
    secret = settings.secret_key.get_secret_value()
    web = WebContext(
        sessions=wiring.sessions,
        redis=wiring.redis,
        links=wiring.links,
        pages=Pages.load(wiring.env, settings.templates_dir, settings.list_name),
        csrf=CsrfGuard(secret),
        limits=limits or SignupLimits(wiring.redis),
        send_confirmation=confirm,
        clock=clock,
        secure_cookies=settings.base_url.startswith("https://"),
        default_max_papers=settings.default_max_papers,
    )
    app = FastAPI(title="papermail", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = web
    for module in (signup, manage, feedback, archive):
        app.include_router(module.router)
    attach_webhooks(app, wiring=wiring, clock=clock)  # bounces and complaints (SES, Postmark)
    http_metrics = attach_ops(app, wiring=wiring, dispatcher=dispatcher, celery=celery)
    app.add_middleware(HeadAsGet)  # inside EdgeMiddleware: logs and metrics say HEAD
    app.add_middleware(EdgeMiddleware, http_metrics=http_metrics)
    _add_basics(app, web)
    _add_error_pages(app, web)
    return app


def _celery_app(wiring: Wiring) -> Celery:
    from workers.celery_app import make_celery  # only the shells know Celery

    return make_celery(wiring.settings)


def _celery_dispatcher(celery: Celery) -> Dispatcher:
    from workers.dispatch import CeleryDispatcher

    return CeleryDispatcher(celery)


def _quietly(dispatcher: Dispatcher) -> SendConfirmation:
    """Work run in the request (embedded mode) must not turn a sign-up into a 500: the
    page says "check your inbox" either way, and the log says what went wrong."""

    def send(subscriber_id: int) -> None:
        try:
            dispatcher.send_confirmation(subscriber_id)
        except Exception:  # nobody to report to but the log
            log.exception("confirmation email for subscriber %s failed", subscriber_id)

    return send


def _add_basics(app: FastAPI, web: WebContext) -> None:
    @app.get("/static/papermail.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response(
            web.pages.css,
            media_type="text/css; charset=utf-8",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        # Liveness: the process answers. Dependencies are /readyz's business (web/ops/routes.py),
        # so a Redis outage takes instances out of rotation instead of restarting them all.
        return JSONResponse({"status": "ok"})


LINK_PROBLEMS = {
    "expired": (
        "This link has expired",
        "Links in our emails stop working after a while, to keep your subscription "
        "safe. Use the link in your most recent email.",
    ),
    "revoked": (
        "This link has been replaced",
        "A newer email carries a fresh link. Use the one in your most recent email.",
    ),
}
CONFIRM_EXPIRED = (
    "This confirmation link has expired",
    "Confirmation links work for a limited time. Subscribe again and we'll send a fresh one.",
)
BROKEN_LINK = (
    "This link doesn't work",
    "It may have been cut short or changed when it was copied. Try opening it "
    "straight from the email, or copy the whole address.",
)
STATUS_PAGES = {
    404: ("Page not found", "There's nothing at this address."),
    405: ("That didn't work", "This page can't be used that way."),
    413: ("That's too much", "The form sent more than we accept."),
}


def _add_error_pages(app: FastAPI, web: WebContext) -> None:
    def page(status: int, heading: str, body: str, *, subscribe: bool = False) -> Response:
        return web.pages.render(
            "message.html.j2",
            status=status,
            title=heading,
            heading=heading,
            text=body,
            subscribe_link=subscribe,
        )

    @app.exception_handler(InvalidToken)
    def invalid_token(request: Request, exc: InvalidToken) -> Response:
        purpose = request.url.path.strip("/").split("/", 1)[0]
        log.info("rejected %s link: %s", purpose, exc.reason)
        if purpose == "confirm" and exc.reason in ("expired", "no such subscriber"):
            return page(400, *CONFIRM_EXPIRED, subscribe=True)
        heading, body = LINK_PROBLEMS.get(exc.reason, BROKEN_LINK)
        return page(400, heading, body, subscribe=True)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        heading, body = STATUS_PAGES.get(exc.status_code, ("Something went wrong", ""))
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code < 500 else ""
        if exc.status_code == 404 and detail and detail != "Not Found":
            body = detail
        elif exc.status_code == 400:
            heading, body = "That didn't work", detail or "The request could not be read."
        response = page(exc.status_code, heading, body)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return page(
            404 if request.method == "GET" else 400,
            "That didn't work",
            "This address or form isn't one we understand.",
        )

    @app.exception_handler(Exception)
    def server_error(request: Request, exc: Exception) -> Response:
        log.error(
            "error on %s %s: %s",
            request.method,
            redact(request.url.path),
            type(exc).__name__,
            exc_info=exc,
        )
        return page(
            500,
            "Something went wrong on our side",
            "Nothing you did. Please try again in a few minutes.",
        )
