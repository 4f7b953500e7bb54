"""Render exactly what one subscriber would receive, without sending it."""

from __future__ import annotations

import datetime as dt
import html as html_mod
from dataclasses import dataclass

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.models import Edition, EditionKind, MailFormat, Paper, Subscriber
from papermail.pipeline.editions import latest_edition
from papermail.pipeline.histories import pool_papers
from papermail.pipeline.picking import EditionPicker
from papermail.pipeline.planning import reader_selection
from papermail.pipeline.relevance import ReaderProfile
from papermail.pipeline.rendering import DigestContent, PaperCard, fill, render_digest
from papermail.subscribers.subscriptions import normalize_email
from papermail.subscribers.tokens import Links, feedback_payloads


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
    personal_links: bool = True,
) -> PreviewResult:
    """``personal_links=False`` signs the preferences, unsubscribe and feedback links for
    nobody (subscriber 0), as the default preview does: for a copy that leaves the reader's
    mailbox (a test send), where their links would let anyone change their subscription."""
    subscriber = _subscriber(session, email)
    edition = _edition(session, edition_id, subscriber)
    # Planning's choice; without a subscriber, a new reader's: the default length,
    # nothing stated, followed, muted or marked yet.
    if subscriber is not None:
        selection = reader_selection(session, edition=edition, subscriber_id=subscriber.id)
    else:
        picker = EditionPicker(pool_papers(session, edition))
        selection = picker.pick(ReaderProfile(), k=default_max_papers)
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
    sid, version = (
        (subscriber.id, subscriber.token_version) if subscriber and personal_links else (0, 0)
    )
    values = {
        "email": subscriber.email if subscriber else "you@example.org",
        "preferences_url": links.preferences(sid, version),
        "unsubscribe_url": links.unsubscribe(sid, version),
    }
    # As sending fills them: a token per link, signed for this reader, paper and direction.
    tokens = links.signer.feedback_tokens(
        sid, payload_suffixes=feedback_payloads(rendered.feedback_papers())
    )
    values.update(zip(rendered.feedback_slots(), tokens, strict=True))
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
