"""Pages behind a subscriber's signed links: preferences and unsubscribe.

Every response here is ``no-store``: the URL carries a token and the page names
a person. Only POST changes anything; GET is safe for link scanners.

The preferences page also lists the papers the reader marked "More like this" or "Less
like this" (web/feedback.py) and the names they muted, each with a button to take it
back (a POST with the page's CSRF token).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from papermail.db import session_scope
from papermail.models import Subscriber, SubscriberStatus
from papermail.subscribers import confirmations, feedback, subscriptions
from papermail.subscribers.feedback import MuteKind
from papermail.subscribers.preferences import Preferences, blend_of
from papermail.subscribers.tokens import InvalidToken, Purpose
from papermail.web import csrf
from papermail.web.context import WebContext, form_data, get_web
from papermail.web.forms import (
    BLEND_CHOICES,
    CATEGORY_GROUPS,
    REASONS,
    SUGGESTED_ZONES,
    FormData,
    parse_preferences,
    parse_reason,
    preference_values,
)

log = logging.getLogger(__name__)
router = APIRouter()

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
EXPIRED_FORM = (
    "This page had been open a long time, so nothing was saved. "
    "Please check the form and submit it again."
)

LABELS = {
    "frequency": "Frequency",
    "max_papers": "Papers per email",
    "topics": "Topics",
    "follow_organizations": "Organisations",
    "follow_authors": "Authors",
    "format": "Format",
    "timezone": "Time zone",
    "send_hour": "Send hour",
    "relevance_weight": "Trending vs. for me",
    "arxiv_categories": "arXiv categories",
}


def _shown(name: str, value: object) -> str:
    if name == "send_hour":
        return f"{int(value):02d}:00"  # type: ignore[call-overload]
    if name == "format":
        return {"html": "HTML", "text": "plain text"}.get(str(value), str(value))
    if name == "relevance_weight" and isinstance(value, int | float):
        blend = blend_of(value)  # None for a weight set by hand: shown as the number
        return blend.label if blend else f"{value:g}"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return str(getattr(value, "value", value))


def describe_changes(changed: dict[str, tuple[object, object]]) -> list[tuple[str, str, str]]:
    """(label, before, after) for each changed field, in form order."""
    return [
        (LABELS[name], _shown(name, changed[name][0]), _shown(name, changed[name][1]))
        for name in LABELS
        if name in changed
    ]


def _preferences_page(
    web: WebContext,
    session: Session,
    subscriber: Subscriber,
    token: str,
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status: int = 200,
    **extra: object,
) -> Response:
    marks = feedback.marked(session, subscriber_id=subscriber.id)
    return web.pages.render(
        "preferences.html.j2",
        status=status,
        title="Your preferences",
        email=subscriber.email,
        state=subscriber.status.value,
        values=values,
        errors=errors or {},
        zones=SUGGESTED_ZONES,
        blends=BLEND_CHOICES,
        category_groups=CATEGORY_GROUPS,
        action=f"/preferences/{token}",
        unsubscribe_url=web.links.unsubscribe(subscriber.id, subscriber.token_version),
        csrf_token=web.csrf.issue(csrf.link_binding(token)),
        marks=[(mark, web.links.paper(mark.paper_id)) for mark in marks],
        marks_total=(
            len(marks)
            if len(marks) < feedback.MARKS_SHOWN
            else feedback.count_marked(session, subscriber_id=subscriber.id)
        ),
        muted_authors=feedback.muted(subscriber, MuteKind.AUTHOR),
        muted_organizations=feedback.muted(subscriber, MuteKind.ORGANIZATION),
        undo_action=f"/preferences/{token}/undo",
        unmute_action=f"/preferences/{token}/unmute",
        **extra,
    )


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences(
    token: str, welcome: str | None = None, web: WebContext = Depends(get_web)
) -> Response:
    with web.sessions() as session:
        subscriber = confirmations.subscriber_for_token(
            session, signer=web.signer, purpose=Purpose.PREFERENCES, token=token
        )
        values = preference_values(Preferences.of(subscriber))
        return _preferences_page(
            web, session, subscriber, token, values=values, welcome=welcome is not None
        )


@router.post("/preferences/{token}", response_class=HTMLResponse)
def save_preferences(
    token: str, form: FormData = Depends(form_data), web: WebContext = Depends(get_web)
) -> Response:
    with session_scope(web.sessions) as session:
        subscriber = confirmations.subscriber_for_token(
            session, signer=web.signer, purpose=Purpose.PREFERENCES, token=token
        )
        parsed = parse_preferences(form)
        if not web.csrf.check(form.get(csrf.FIELD), csrf.link_binding(token)):
            return _preferences_page(
                web,
                session,
                subscriber,
                token,
                values=parsed.values,
                errors=parsed.errors,
                status=403,
                notice=EXPIRED_FORM,
            )
        if not parsed.ok or parsed.value is None:
            return _preferences_page(
                web,
                session,
                subscriber,
                token,
                values=parsed.values,
                errors=parsed.errors,
                status=400,
            )
        changed = subscriptions.apply_preferences(subscriber, parsed.value)
        session.flush()
        return _preferences_page(
            web,
            session,
            subscriber,
            token,
            values=preference_values(parsed.value),
            saved=True,
            changes=describe_changes(changed),
        )


@router.post("/preferences/{token}/undo", response_class=HTMLResponse)
def undo_mark(
    token: str, form: FormData = Depends(form_data), web: WebContext = Depends(get_web)
) -> Response:
    """Forget one "More like this" / "Less like this" mark."""
    with session_scope(web.sessions) as session:
        subscriber, values, refused = _checked_form(web, session, token, form)
        if refused is not None:
            return refused
        mark = feedback.undo(
            session, subscriber_id=subscriber.id, paper_id=form.get("paper_id", "")
        )
        return _preferences_page(
            web, session, subscriber, token, values=values, undone=mark.title if mark else ""
        )


@router.post("/preferences/{token}/unmute", response_class=HTMLResponse)
def unmute(
    token: str, form: FormData = Depends(form_data), web: WebContext = Depends(get_web)
) -> Response:
    """Take one author or organisation off the muted lists."""
    with session_scope(web.sessions) as session:
        subscriber, values, refused = _checked_form(web, session, token, form)
        if refused is not None:
            return refused
        try:
            kind = MuteKind(form.get("kind", ""))
        except ValueError:
            return _preferences_page(web, session, subscriber, token, values=values, status=400)
        name = form.get("name", "")
        done = feedback.unmute(session, subscriber_id=subscriber.id, kind=kind, name=name)
        return _preferences_page(
            web, session, subscriber, token, values=values, unmuted=name if done else ""
        )


def _checked_form(
    web: WebContext, session: Session, token: str, form: FormData
) -> tuple[Subscriber, dict[str, str], Response | None]:
    """The preferences link's subscriber and their form values, plus the page to answer
    with instead when the form's CSRF token is missing or stale."""
    subscriber = confirmations.subscriber_for_token(
        session, signer=web.signer, purpose=Purpose.PREFERENCES, token=token
    )
    values = preference_values(Preferences.of(subscriber))
    if web.csrf.check(form.get(csrf.FIELD), csrf.link_binding(token)):
        return subscriber, values, None
    refused = _preferences_page(
        web, session, subscriber, token, values=values, status=403, notice=EXPIRED_FORM
    )
    return subscriber, values, refused


def _unsubscriber(session, web: WebContext, token: str) -> Subscriber | None:
    """The subscriber an unsubscribe link names; None if they were erased since."""
    try:
        return confirmations.subscriber_for_token(
            session, signer=web.signer, purpose=Purpose.UNSUBSCRIBE, token=token
        )
    except InvalidToken as exc:
        if exc.reason == "no such subscriber":
            return None  # a signed link for someone we forgot: they get nothing already
        raise


def _unsubscribed_page(
    web: WebContext,
    request: Request,
    subscriber: Subscriber | None,
    *,
    just_now: bool,
    resubscribe: bool = True,
) -> Response:
    cookie, fresh = web.form_cookie(request)
    response = web.pages.render(
        "unsubscribed.html.j2",
        title="You're unsubscribed",
        just_now=just_now,
        email=subscriber.email if subscriber else None,
        resubscribe=resubscribe
        and subscriber is not None
        and subscriber.status is not SubscriberStatus.SUPPRESSED,
        frequency=subscriber.frequency.value if subscriber else "daily",
        topics=", ".join(subscriber.topics or []) if subscriber else "",
        arxiv_categories=", ".join(subscriber.arxiv_categories or []) if subscriber else "",
        csrf_token=web.csrf.issue(csrf.cookie_binding(cookie)),
    )
    if fresh and resubscribe:
        web.set_form_cookie(response, cookie)
    return response


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, request: Request, web: WebContext = Depends(get_web)) -> Response:
    with web.sessions() as session:
        subscriber = _unsubscriber(session, web, token)
        if subscriber is None or subscriber.status in (
            SubscriberStatus.UNSUBSCRIBED,
            SubscriberStatus.SUPPRESSED,
        ):
            return _unsubscribed_page(web, request, subscriber, just_now=False)
        return _unsubscribe_form(web, subscriber, token, values={"reason": "", "note": ""})


def _unsubscribe_form(
    web: WebContext,
    subscriber: Subscriber,
    token: str,
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    return web.pages.render(
        "unsubscribe.html.j2",
        status=status,
        title="Unsubscribe",
        email=subscriber.email,
        action=f"/unsubscribe/{token}",
        reasons=REASONS,
        values=values,
        errors=errors or {},
        notice=notice,
        csrf_token=web.csrf.issue(csrf.link_binding(token)),
    )


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(
    token: str,
    request: Request,
    form: FormData = Depends(form_data),
    web: WebContext = Depends(get_web),
) -> Response:
    one_click = form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
    with session_scope(web.sessions) as session:
        subscriber = _unsubscriber(session, web, token)
        if one_click:
            # RFC 8058: no cookie, no CSRF token, no questions; 200 once done.
            if subscriber is not None:
                subscriptions.unsubscribe(
                    session, subscriber, now=web.clock(), reason="one-click (List-Unsubscribe-Post)"
                )
            log.info(
                "one-click unsubscribe for subscriber %s",
                subscriber.id if subscriber else "(erased)",
            )
            return _unsubscribed_page(web, request, subscriber, just_now=True, resubscribe=False)
        if subscriber is None:
            return _unsubscribed_page(web, request, None, just_now=False)
        parsed = parse_reason(form)
        if not web.csrf.check(form.get(csrf.FIELD), csrf.link_binding(token)):
            return _unsubscribe_form(
                web,
                subscriber,
                token,
                values=parsed.values,
                errors=parsed.errors,
                status=403,
                notice=EXPIRED_FORM,
            )
        if parsed.errors:
            return _unsubscribe_form(
                web, subscriber, token, values=parsed.values, errors=parsed.errors, status=400
            )
        subscriptions.unsubscribe(session, subscriber, now=web.clock(), reason=parsed.value or None)
        return _unsubscribed_page(web, request, subscriber, just_now=True)
