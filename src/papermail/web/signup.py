"""Landing page, subscribe form, confirmation link."""

from __future__ import annotations

import logging

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from papermail.db import session_scope
from papermail.models import Subscriber, SubscriberStatus
from papermail.subscribers import confirmations
from papermail.subscribers.confirmations import Confirmed
from papermail.subscribers.tokens import MAX_AGE, Purpose
from papermail.web import csrf
from papermail.web.archive import latest_view
from papermail.web.context import WebContext, form_data, get_web
from papermail.web.forms import CATEGORY_GROUPS, FormData, parse_subscribe

log = logging.getLogger(__name__)
router = APIRouter()

SAMPLE_PAPERS = 3
_CONFIRM_AGE = MAX_AGE[Purpose.CONFIRM]
CONFIRM_HOURS = int(_CONFIRM_AGE.total_seconds() // 3600) if _CONFIRM_AGE else None
EMPTY_FORM = {"email": "", "topics": "", "arxiv_categories": "", "frequency": "daily"}


def _landing(
    web: WebContext,
    request: Request,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
    notice: str | None = None,
) -> Response:
    cookie, fresh = web.form_cookie(request)
    with web.sessions() as session:
        sample = latest_view(session, web.links, limit=SAMPLE_PAPERS)
    response = web.pages.render(
        "landing.html.j2",
        status=status,
        values=values,
        errors=errors,
        notice=notice,
        csrf_token=web.csrf.issue(csrf.cookie_binding(cookie)),
        sample=sample,
        category_groups=CATEGORY_GROUPS,
    )
    if fresh:
        web.set_form_cookie(response, cookie)
    return response


@router.get("/", response_class=HTMLResponse)
def landing(request: Request, web: WebContext = Depends(get_web)) -> Response:
    return _landing(web, request, values=dict(EMPTY_FORM), errors={})


@router.get("/subscribe", include_in_schema=False)
def subscribe_form() -> Response:
    """Someone reloaded or typed the form's address: show them the form."""
    return RedirectResponse("/#subscribe", status_code=303)


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request,
    background: BackgroundTasks,
    form: FormData = Depends(form_data),
    web: WebContext = Depends(get_web),
) -> Response:
    ip = request.client.host if request.client else "unknown"
    if not web.limits.allow_ip(ip):
        response = web.pages.render(
            "message.html.j2",
            status=429,
            title="Slow down a little",
            heading="Too many sign-ups from here",
            text="We've had a lot of subscribe requests from your network "
            "in the last hour. Please try again later.",
        )
        response.headers["Retry-After"] = str(web.limits.per_ip.window_seconds)
        return response
    # The form does not ask how many papers: new readers get the configured default.
    parsed = parse_subscribe(form, max_papers=web.default_max_papers)
    cookie = request.cookies.get(csrf.COOKIE)
    if not web.csrf.check(form.get(csrf.FIELD), csrf.cookie_binding(cookie) if cookie else None):
        return _landing(
            web,
            request,
            values=parsed.values,
            errors=parsed.errors,
            status=403,
            notice="This form had expired, so nothing was sent. "
            "Please check your details and press Subscribe again.",
        )
    if not parsed.ok or parsed.value is None:
        return _landing(web, request, values=parsed.values, errors=parsed.errors, status=400)
    address = parsed.value.email
    # Over the per-address budget the page is the same; only the email is withheld.
    if web.limits.allow_address(address):
        with session_scope(web.sessions) as session:
            subscriber_id = confirmations.request_subscription(
                session, email=address, prefs=parsed.value.prefs, now=web.clock()
            )
        if subscriber_id is not None:
            # After the commit and after the response: the page takes as long for a
            # known address as for a new one, and a task never names a missing row.
            background.add_task(web.send_confirmation, subscriber_id)
    else:
        log.info("subscribe: confirmation budget spent for an address; not sending")
    return web.pages.render(
        "check_inbox.html.j2", title="Check your inbox", email=address, valid_hours=CONFIRM_HOURS
    )


@router.get("/confirm/{token}")
def confirm_page(token: str, web: WebContext = Depends(get_web)) -> Response:
    """The emailed link shows a button and changes nothing: mail scanners and link
    checkers open every link, and opening must not subscribe anyone (or use the link up).
    An active reader's link is their way in: it goes straight to their preferences."""
    with web.sessions() as session:
        checked = confirmations.check_confirm(session, signer=web.signer, token=token)
        subscriber = checked.subscriber
        if checked.outcome is Confirmed.USED:
            return _used_link_page(web, active=subscriber.status is SubscriberStatus.ACTIVE)
        if checked.outcome is Confirmed.ALREADY_ACTIVE:
            return _to_preferences(web, subscriber)
        return web.pages.render(
            "confirm.html.j2",
            title="Confirm your subscription",
            email=subscriber.email,
            action=f"/confirm/{token}",
        )


@router.post("/confirm/{token}")
def confirm(token: str, web: WebContext = Depends(get_web)) -> Response:
    """The button: activates (once) and lands on the preferences page.

    No CSRF cookie, like the RFC 8058 one-click unsubscribe: the signed, single-use link
    is the secret, and a link opened in another browser (or on a phone) must still work.
    """
    with session_scope(web.sessions) as session:
        result = confirmations.confirm(session, signer=web.signer, token=token, now=web.clock())
        subscriber = result.subscriber
        if result.outcome is Confirmed.USED:
            return _used_link_page(web, active=subscriber.status is SubscriberStatus.ACTIVE)
        return _to_preferences(web, subscriber)


def _to_preferences(web: WebContext, subscriber: Subscriber) -> Response:
    prefs_token = web.signer.make(
        Purpose.PREFERENCES, subscriber_id=subscriber.id, token_version=subscriber.token_version
    )
    return RedirectResponse(f"/preferences/{prefs_token}?welcome=1", status_code=303)


USED_HEADING = "This link has already been used"
USED_WHILE_ACTIVE = (
    "Each confirmation link works once, and you're subscribed. "
    "Every email we send you has a link to your preferences."
)
USED_NOT_ACTIVE = (
    "Each confirmation link works once, and only the newest one we sent counts, so this "
    "one changed nothing. To subscribe, use the link in our most recent email or sign up again."
)


def _used_link_page(web: WebContext, *, active: bool) -> Response:
    return web.pages.render(
        "message.html.j2",
        status=410,
        title=USED_HEADING,
        heading=USED_HEADING,
        text=USED_WHILE_ACTIVE if active else USED_NOT_ACTIVE,
        subscribe_link=not active,
    )
