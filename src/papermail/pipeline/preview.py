"""Render exactly what one subscriber would receive, without sending it."""

from __future__ import annotations

import datetime as dt
import html as html_mod
from dataclasses import dataclass

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.models import Edition, EditionKind, MailFormat, Paper, Subscriber
from papermail.pipeline import ranking
from papermail.pipeline.editions import latest_edition
from papermail.pipeline.planning import edition_candidates
from papermail.pipeline.rendering import (
    DigestContent,
    PaperCard,
    feedback_plan,
    fill,
    render_digest,
)
from papermail.subscribers.subscriptions import normalize_email
from papermail.subscribers.tokens import Links


@dataclass(frozen=True, slots=True)
class PreviewResult:
    name: str
    subject: str
    text: str
    html: str | None


def render_preview(
    session: Session,
    *,
    email: str | None,
    edition_id: int | None,
    env: jinja2.Environment,
    links: Links,
    list_name: str,
    default_max_papers: int,
) -> PreviewResult:
    subscriber = _subscriber(session, email)
    edition = _edition(session, edition_id, subscriber)
    # Planning's mapping; without a subscriber, a new reader's: the default, nothing
    # followed or muted.
    interests = (
        ranking.Interests.of(subscriber)
        if subscriber
        else ranking.Interests(max_papers=default_max_papers)
    )
    muted = ranking.Muted.of(subscriber) if subscriber else ranking.NOBODY_MUTED
    selection = ranking.select(edition_candidates(session, edition), interests, muted=muted)
    papers = {
        p.id: p
        for p in session.scalars(select(Paper).where(Paper.id.in_([pid for pid, _ in selection])))
    }
    fmt = subscriber.format if subscriber else MailFormat.HTML
    rendered = render_digest(
        env,
        DigestContent(
            edition_day=edition.day,
            edition_kind=edition.kind.value,
            web_url=links.edition(edition.day, edition.kind.value),
            papers=tuple(
                PaperCard.from_paper(papers[pid], reason=why, url=links.paper(pid))
                for pid, why in selection
            ),
            format=fmt.value,
            feedback_url=links.feedback_prefix,
            list_name=list_name,
        ),
    )
    sid, version = (subscriber.id, subscriber.token_version) if subscriber else (0, 0)
    values = {
        "email": subscriber.email if subscriber else "you@example.org",
        "preferences_url": links.preferences(sid, version),
        "unsubscribe_url": links.unsubscribe(sid, version),
    }
    slots, payloads = feedback_plan(rendered)  # as sending fills them: a token per link
    tokens = links.signer.feedback_tokens(sid, payload_suffixes=payloads)
    values.update(zip(slots, tokens, strict=True))
    html_values = {k: html_mod.escape(v, quote=True) for k, v in values.items()}
    who = (subscriber.email if subscriber else "default").replace("@", "_at_")
    return PreviewResult(
        name=f"{edition.day}-{edition.kind.value}-{who}",
        subject=rendered.subject,
        text=fill(rendered.text, values),
        html=fill(rendered.html, html_values) if rendered.html is not None else None,
    )


def _subscriber(session: Session, email: str | None) -> Subscriber | None:
    if email is None:
        return None
    address = normalize_email(email)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        raise LookupError(f"no subscriber {email}")
    return subscriber


def _edition(session: Session, edition_id: int | None, subscriber: Subscriber | None) -> Edition:
    if edition_id is not None:
        if (edition := session.get(Edition, edition_id)) is None:
            raise LookupError(f"no edition {edition_id}; `papermail rank` prints edition ids")
        return edition
    else:
        kind = EditionKind(subscriber.frequency.value) if subscriber else EditionKind.DAILY
        edition = latest_edition(session, kind=kind, on_or_before=_far_future())
    if edition is None:
        raise LookupError("no edition yet; run `papermail rank` first")
    return edition


def _far_future() -> dt.date:
    return dt.date.max
