"""Render once per edition, assemble per reader.

A *variant* is one selection: (edition, format, the chosen papers with their why-lines),
stored once per distinct selection in the ``variants`` table (readers with the same
choices share one). ``render_edition_from_db`` renders an edition's whole pool of cards
once per format (Jinja2 -> MJML -> HTML, cut into pieces) into Redis; a send batch gets
each reader's selection and joins that edition's pre-encoded pieces into their message
template (encoded.py), then stamps in their address and signed links. A process that
finds Redis empty (restart, eviction) renders the edition itself from the database.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import cast

import jinja2
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from papermail.bounces.verp import Verp
from papermail.db import on_postgres
from papermail.delivery.base import OutgoingMessage
from papermail.models import Edition, EditionItem, MailFormat, Variant
from papermail.pipeline.encoded import EncodedEdition, ReaderTemplate
from papermail.pipeline.encoding import Layout
from papermail.pipeline.messages import build_message, list_id, random_message_id
from papermail.pipeline.pieces import Pick, RenderedEdition
from papermail.pipeline.rendering import (
    DigestContent,
    EditionStore,
    PaperCard,
    render_edition,
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
    verp: Verp | None = None  # per-message envelope senders (papermail/bounces/verp.py)

    def envelope_for(
        self, *, delivery_id: int | None = None, subscriber_id: int | None = None
    ) -> str:
        """MAIL FROM for one message: its VERP address when VERP is on, else the sender's."""
        if self.verp is None:
            return self.envelope_from
        return self.verp.address(delivery_id=delivery_id, subscriber_id=subscriber_id)

    def single_message(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        now: dt.datetime,
        envelope: str,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> OutgoingMessage:
        """A one-off message from this sender (a confirmation, a test send), DKIM-signed
        with ``sign`` as sending signs a digest; ``envelope`` is its MAIL FROM."""
        message_id = random_message_id(self.domain)
        data = build_message(
            sender=self.mail_from,
            to=to,
            subject=subject,
            text=text,
            html_body=html,
            message_id=message_id,
            date=now,
            reply_to=self.reply_to,
        )
        if sign is not None:
            data = sign(data)
        return OutgoingMessage(sender=envelope, recipient=to, data=data, message_id=message_id)


def edition_cards(session: Session, edition: Edition, links: Links) -> tuple[PaperCard, ...]:
    """Every paper of the edition's pool as a card, in trending order (no why-line yet)."""
    items = session.scalars(
        select(EditionItem).where(EditionItem.edition_id == edition.id).order_by(EditionItem.rank)
    )
    return tuple(
        PaperCard.from_paper(item.paper, reason="", url=links.paper(item.paper_id))
        for item in items
    )


def render_edition_from_db(
    session: Session,
    *,
    edition: Edition,
    env: jinja2.Environment,
    links: Links,
    list_name: str,
) -> RenderedEdition:
    """Both parts of the edition's digest: HTML readers get both, text readers the text."""
    content = DigestContent(
        edition_day=edition.day,
        edition_kind=edition.kind.value,
        web_url=links.edition(edition.day, edition.kind.value),
        papers=edition_cards(session, edition, links),
        format=MailFormat.HTML.value,
        feedback_url=links.feedback_prefix,
        list_name=list_name,
    )
    return render_edition(env, content)


def render_once(
    session: Session,
    *,
    edition: Edition,
    store: EditionStore,
    env: jinja2.Environment,
    links: Links,
    list_name: str,
) -> bool:
    """Render the edition into the store unless it is there; whether it rendered."""
    key = EditionStore.key(edition.id)
    if store.get(key) is not None:
        return False
    store.put(
        key,
        render_edition_from_db(session, edition=edition, env=env, links=links, list_name=list_name),
    )
    return True


@dataclass(frozen=True, slots=True)
class Selection:
    """A variant as a batch needs it."""

    edition_id: int
    format: MailFormat
    picks: tuple[Pick, ...]


class TemplateSource:
    """Per sending process: encoded editions and variants' selections, bounded.

    An edition is encoded once per process (from this process's memory, else Redis, else
    a fresh render) and every reader's template is joined from it; selections are read a
    batch at a time (``prefetch``). The edition cache is bounded in bytes, the selection
    cache in entries: with per-reader selections most are used once, so it holds a few
    batches' worth (a selection is ~2 KB: 50,000 of them were 100 MB a process), and
    shared selections (readers without feedback: hundreds an edition) all stay.
    """

    def __init__(
        self,
        *,
        store: EditionStore,
        env: jinja2.Environment,
        links: Links,
        identity: Identity,
        max_bytes: int = 64 * 2**20,
        max_selections: int = 2_000,
    ) -> None:
        self.store, self.env, self.links, self.identity = store, env, links, identity
        self.max_bytes, self.max_selections = max_bytes, max_selections
        self._editions: OrderedDict[str, EncodedEdition] = OrderedDict()
        self._bytes = 0
        self._selections: OrderedDict[str, Selection] = OrderedDict()

    def prefetch(self, session: Session, keys: Iterable[str]) -> None:
        """Read the selections of ``keys`` not yet held, in one query."""
        missing = sorted(set(keys) - self._selections.keys())
        # Room for all of them first: a batch bigger than the bound keeps its own.
        while self._selections and len(self._selections) + len(missing) > self.max_selections:
            self._selections.popitem(last=False)
        for rows in _selections_of(session, missing):
            for key, edition_id, fmt, selection in rows:
                self._selections[key] = Selection(edition_id, MailFormat(fmt), _picks(selection))

    def get(self, session: Session, key: str, *, edition: Edition) -> ReaderTemplate:
        selection = self._selections.get(key)
        if selection is None:
            self.prefetch(session, [key])
            if (selection := self._selections.get(key)) is None:
                raise LookupError(f"variant {key} does not exist")
        if selection.edition_id != edition.id:
            raise LookupError(f"variant {key} belongs to edition {selection.edition_id}")
        return self.encoded(session, edition, selection.format).template(selection.picks)

    def encoded(self, session: Session, edition: Edition, fmt: MailFormat) -> EncodedEdition:
        key = f"{edition.id}:{fmt.value}"
        if (found := self._editions.get(key)) is not None:
            self._editions.move_to_end(key)
            return found
        rendered = self.store.get(EditionStore.key(edition.id))
        if rendered is None:
            log.info("edition %s missing from Redis; rendering it here", edition.id)
            rendered = render_edition_from_db(
                session,
                edition=edition,
                env=self.env,
                links=self.links,
                list_name=self.identity.list_name,
            )
            self.store.put(EditionStore.key(edition.id), rendered)
        if fmt is MailFormat.TEXT:
            rendered = replace(rendered, html=None)
        layout = Layout.make(
            sender=self.identity.mail_from,
            list_id=list_id(self.identity.list_name, self.identity.domain, edition.kind.value),
            reply_to=self.identity.reply_to,
            archive_url=f"{self.links.base_url}/editions",
            multipart=rendered.html is not None,
        )
        encoded = EncodedEdition(rendered, layout)
        while self._editions and self._bytes + encoded.size > self.max_bytes:
            _key, evicted = self._editions.popitem(last=False)
            self._bytes -= evicted.size
        self._editions[key] = encoded
        self._bytes += encoded.size
        return encoded


# PostgreSQL: the keys as one array parameter. As an IN list, a batch's hundred keys were
# rendered into the SQL and parsed by the driver anew for every batch.
_PG_SELECTIONS = text(
    "SELECT key, edition_id, format, selection FROM variants"
    " WHERE key = ANY(CAST(:keys AS varchar[]))"
)
SelectionRow = tuple[str, int, str, object]


def _selections_of(session: Session, keys: list[str]) -> Iterator[Iterable[SelectionRow]]:
    """The variants rows of ``keys``: one query on PostgreSQL, chunks of 1,000 elsewhere
    (SQLite's limit on bound parameters)."""
    if not keys:
        return
    if on_postgres(session):
        yield cast(Iterable[SelectionRow], session.execute(_PG_SELECTIONS, {"keys": keys}))
        return
    for start in range(0, len(keys), 1000):
        yield cast(
            Iterable[SelectionRow],
            session.execute(
                select(Variant.key, Variant.edition_id, Variant.format, Variant.selection).where(
                    Variant.key.in_(keys[start : start + 1000])
                )
            ),
        )


def _picks(raw: object) -> tuple[Pick, ...]:
    if not isinstance(raw, list):
        raise ValueError("a variant's selection must be a list of [paper id, why-line]")
    return tuple((str(paper_id), str(why)) for paper_id, why in raw)
