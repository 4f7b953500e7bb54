"""Render once, personalise many.

A variant is what a group of subscribers receives: (edition, selected papers
with reasons, format). ``render_variants`` compiles each distinct variant once
(Jinja2 -> MJML -> HTML + text) into Redis; a send batch turns a compiled
variant into a pre-encoded ``MessageTemplate`` and stamps out one message per
subscriber (their address, their signed links: the footer's and each card's two
feedback links). A batch that finds Redis empty (restart, eviction) renders the
variant itself from the durable ``variants`` row.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail.models import Edition, Paper, Variant
from papermail.pipeline.messages import MessageTemplate, list_id
from papermail.pipeline.rendering import (
    DigestContent,
    PaperCard,
    RenderedVariant,
    VariantStore,
    feedback_plan,
    render_digest,
)
from papermail.subscribers.tokens import Links

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who digests come from; fixed per deployment."""

    mail_from: str  # From header, e.g. "papermail <digest@example.org>"
    envelope_from: str  # bare address for MAIL FROM
    domain: str  # for Message-IDs and List-Id
    list_name: str
    reply_to: str | None = None


def render_from_db(
    session: Session, *, key: str, env: jinja2.Environment, links: Links, list_name: str
) -> RenderedVariant:
    variant = session.get(Variant, key)
    if variant is None:
        raise LookupError(f"variant {key} does not exist")
    edition = session.get(Edition, variant.edition_id)
    assert edition is not None  # FK
    ids = [paper_id for paper_id, _reason in variant.selection]
    papers = {p.id: p for p in session.scalars(select(Paper).where(Paper.id.in_(ids)))}
    cards = tuple(
        PaperCard.from_paper(papers[pid], reason=reason, url=links.paper(pid))
        for pid, reason in variant.selection
        if pid in papers
    )
    content = DigestContent(
        edition_day=edition.day,
        edition_kind=edition.kind.value,
        web_url=links.edition(edition.day, edition.kind.value),
        papers=cards,
        format=variant.format.value,
        feedback_url=links.feedback_prefix,
        list_name=list_name,
    )
    return render_digest(env, content)


def render_variants(
    session: Session,
    *,
    keys: Iterable[str],
    store: VariantStore,
    env: jinja2.Environment,
    links: Links,
    list_name: str,
) -> int:
    """Compile every variant not yet in the store; returns how many were compiled."""
    compiled = 0
    for key in keys:
        if store.get(key) is None:
            store.put(
                key, render_from_db(session, key=key, env=env, links=links, list_name=list_name)
            )
            compiled += 1
    return compiled


class TemplateSource:
    """Encoded message templates: this process's memory, then Redis, then a fresh render.

    One per worker process, bounded by size: a day's few hundred variants are encoded
    once per process rather than once per batch, and old editions age out. The bound is
    in bytes, not entries: planning publishes an edition's batches variant by variant,
    chunk after chunk, and an LRU holding fewer entries than that cycle re-encodes every
    variant at every chunk (it did, at 552 variants against a 512-entry cap).
    """

    def __init__(
        self,
        *,
        store: VariantStore,
        env: jinja2.Environment,
        links: Links,
        identity: Identity,
        max_bytes: int = 64 * 2**20,
    ) -> None:
        self.store, self.env, self.links, self.identity = store, env, links, identity
        self.max_bytes = max_bytes
        self._templates: OrderedDict[str, MessageTemplate] = OrderedDict()
        self._bytes = 0

    def get(self, session: Session, key: str, *, edition: Edition) -> MessageTemplate:
        if key in self._templates:
            self._templates.move_to_end(key)
        else:
            rendered = self.store.get(key)
            if rendered is None:
                log.info("variant %s missing from Redis; rendering it in the batch", key)
                rendered = render_from_db(
                    session,
                    key=key,
                    env=self.env,
                    links=self.links,
                    list_name=self.identity.list_name,
                )
                self.store.put(key, rendered)
            feedback_slots, feedback_payloads = feedback_plan(rendered)
            template = MessageTemplate.compile(
                sender=self.identity.mail_from,
                subject=rendered.subject,
                text=rendered.text,
                html_body=rendered.html,
                list_id=list_id(self.identity.list_name, self.identity.domain, edition.kind.value),
                reply_to=self.identity.reply_to,
                archive_url=f"{self.links.base_url}/editions",
                feedback_slots=feedback_slots,
                feedback_payloads=feedback_payloads,
            )
            while self._templates and self._bytes + template.size > self.max_bytes:
                _key, evicted = self._templates.popitem(last=False)
                self._bytes -= evicted.size
            self._templates[key] = template
            self._bytes += template.size
        return self._templates[key]
