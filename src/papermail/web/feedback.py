"""The pages behind each digest card's "More like this" / "Less like this" links.

GET changes nothing (mail scanners open every link, and HEAD runs as GET): it shows the
paper and one button. The button POSTs to the same URL and records the mark; the page
says what changed. The same page offers to mute the paper's authors or organisation.

Like the RFC 8058 one-click unsubscribe, the POST needs no cookie and no CSRF token:
the signed token in the URL is the secret, only the reader's mailbox holds it, and it
can act only for the reader, paper and direction it names. A POST must still say what
it wants (``do``), so an empty one changes nothing.

These pages never link to the preferences page: a feedback link is not revoked by the
token version (subscribers/tokens.py), so it must not mint a link that is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from papermail.db import session_scope
from papermail.models import FeedbackDirection, Paper, Subscriber, SubscriberStatus
from papermail.pipeline.rendering import PaperCard, shorten
from papermail.subscribers import feedback
from papermail.subscribers.feedback import MuteKind, Recorded
from papermail.subscribers.tokens import FeedbackClaims, InvalidToken
from papermail.web.context import WebContext, form_data, get_web
from papermail.web.forms import FormData

log = logging.getLogger(__name__)
router = APIRouter()

AUTHORS_OFFERED = 8  # "Mute <author>" buttons on one page; big collaborations list hundreds
SUMMARY_SHOWN = 200

HEADING = {FeedbackDirection.MORE: "More like this?", FeedbackDirection.LESS: "Less like this?"}
BUTTON = {
    FeedbackDirection.MORE: "Show me more like this",
    FeedbackDirection.LESS: "Show me fewer like this",
}
LABEL = {FeedbackDirection.MORE: "more like this", FeedbackDirection.LESS: "less like this"}


@dataclass(frozen=True, slots=True)
class Target:
    """What a feedback link names, loaded."""

    claims: FeedbackClaims
    subscriber: Subscriber
    paper: Paper

    @property
    def direction(self) -> FeedbackDirection:
        return self.claims.direction

    @property
    def title(self) -> str:
        return " ".join(self.paper.title.split())


def _target(session: Session, web: WebContext, token: str) -> Target:
    claims = web.signer.read_feedback(token)
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    paper = session.get(Paper, claims.paper_id)
    if paper is None:
        raise HTTPException(404, "That paper is no longer here.")
    return Target(claims=claims, subscriber=subscriber, paper=paper)


def _mute_offers(target: Target) -> tuple[list[tuple[str, bool]], tuple[str, bool] | None]:
    """(author, already muted) for the first authors, and the same for the organisation."""
    seen: set[str] = set()
    authors: list[tuple[str, bool]] = []
    for raw in target.paper.authors or ():
        name = feedback.clean_name(str(raw))
        if name and feedback.name_key(name) not in seen and len(authors) < AUTHORS_OFFERED:
            seen.add(feedback.name_key(name))
            authors.append((name, feedback.is_muted(target.subscriber, MuteKind.AUTHOR, name)))
    org = feedback.clean_name(target.paper.organization or "")
    organization = (
        (org, feedback.is_muted(target.subscriber, MuteKind.ORGANIZATION, org)) if org else None
    )
    return authors, organization


def _page(
    web: WebContext,
    session: Session,
    target: Target,
    token: str,
    *,
    status: int = 200,
    done: str | None = None,
    recorded: bool = False,
    undone: bool = False,
    notice: str | None = None,
) -> Response:
    card = PaperCard.from_paper(target.paper, reason="", url=web.links.paper(target.paper.id))
    authors, organization = _mute_offers(target)
    return web.pages.render(
        "feedback.html.j2",
        status=status,
        title=HEADING[target.direction],
        heading="Thanks" if done and status == 200 else HEADING[target.direction],
        direction=target.direction.value,
        button=BUTTON[target.direction],
        card=card,
        summary=shorten(card.summary, limit=SUMMARY_SHOWN),
        current=feedback.current(
            session, subscriber_id=target.subscriber.id, paper_id=target.paper.id
        ),
        label=LABEL,
        action=f"/feedback/{token}",
        done=done,
        recorded=recorded,
        undone=undone,
        notice=notice,
        authors=authors,
        organization=organization,
        active=target.subscriber.status is SubscriberStatus.ACTIVE,
    )


@router.get("/feedback/{token}", response_class=HTMLResponse)
def feedback_page(token: str, web: WebContext = Depends(get_web)) -> Response:
    with web.sessions() as session:
        return _page(web, session, _target(session, web, token), token)


@router.post("/feedback/{token}", response_class=HTMLResponse)
def give_feedback(
    token: str, form: FormData = Depends(form_data), web: WebContext = Depends(get_web)
) -> Response:
    with session_scope(web.sessions) as session:
        target = _target(session, web, token)
        sid, paper_id = target.subscriber.id, target.paper.id
        if form.get("do") == "record":
            outcome = feedback.record(
                session,
                subscriber_id=sid,
                paper_id=paper_id,
                direction=target.direction,
                now=web.clock(),
            )
            log.info("feedback %s from subscriber %s: %s", target.direction, sid, outcome)
            return _page(web, session, target, token, done=_said(target, outcome), recorded=True)
        if form.get("do") == "undo":
            feedback.undo(session, subscriber_id=sid, paper_id=paper_id)
            return _page(web, session, target, token, undone=True)
        kind, name = _mute_request(form, target)
        if kind is None or name is None:
            return _page(
                web, session, target, token, status=400, notice="That didn't work: nothing changed."
            )
        try:
            feedback.mute(session, subscriber_id=sid, kind=kind, name=name)
        except feedback.TooManyMuted:
            notice = (
                f"You've muted {feedback.MAX_MUTED} names already. Unmute some from the "
                "Preferences link in any email first."
            )
            return _page(web, session, target, token, status=400, notice=notice)
        log.info("subscriber %s muted an %s", sid, kind)
        return _page(web, session, target, token, done=f"You won't get papers by {name} any more.")


def _said(target: Target, outcome: Recorded) -> str:
    amount = "more" if target.direction is FeedbackDirection.MORE else "fewer"
    said = f"You'll see {amount} like \u201c{target.title}\u201d."
    return said if outcome is not Recorded.UNCHANGED else f"{said} (You'd said so already.)"


def _mute_request(form: FormData, target: Target) -> tuple[MuteKind | None, str | None]:
    """The author or organisation a mute button names, if it is this paper's."""
    if (author := form.get("mute_author")) is not None:
        offered = {feedback.name_key(name): name for name, _ in _mute_offers(target)[0]}
        return MuteKind.AUTHOR, offered.get(feedback.name_key(author))
    if (org := form.get("mute_organization")) is not None:
        organization = _mute_offers(target)[1]
        if organization and feedback.name_key(org) == feedback.name_key(organization[0]):
            return MuteKind.ORGANIZATION, organization[0]
        return MuteKind.ORGANIZATION, None
    return None, None
