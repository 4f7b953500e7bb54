"""An edition's pieces, encoded once: each reader's message template is then a join.

``EncodedEdition`` quoted-printable-encodes every literal of a rendered edition's pieces
(pieces.py) once per sending process. Every encoded literal ends on a (soft) line break
(encoding.py), so pieces encoded apart join into valid quoted-printable in any order: a
reader's message is the head, their cards and the foot, joined in one pass with the
per-selection values (intro, preview line, card numbers, why-lines: encoded once and
remembered, readers share most) and the per-message ones (address, signed links).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from papermail.pipeline.encoding import (
    DateHeaders,
    Layout,
    check_tokens,
    encode_segments,
    encode_value,
    html_value,
    personal_headers,
    subject_header,
)
from papermail.pipeline.pieces import (
    FEEDBACK_SLOTS,
    MESSAGE_SLOTS,
    Pick,
    Pieces,
    RenderedEdition,
    escaped,
    head_values,
)
from papermail.subscribers.tokens import feedback_payloads


class NotInEdition(LookupError):
    """A selection names a paper the edition has no card for."""


WHY_CACHE = 20_000  # encoded why-lines kept: most repeat ("#1 trending · 212 upvotes")


class ReaderTemplate:
    """One reader's digest, ready to render: which cards, in which order, with which
    why-lines. Rendering is one pass over the edition's pre-encoded pieces, the reader's
    values spliced in; nothing is assembled or encoded twice."""

    __slots__ = (
        "_edition",
        "_cards",
        "_reasons",
        "_heads",
        "subject",
        "feedback_slots",
        "feedback_payloads",
    )

    def __init__(
        self,
        edition: EncodedEdition,
        cards: list[int],
        reasons: list[str],
        *,
        subject: bytes,
        feedback_slots: tuple[str, ...],
        feedback_payloads: tuple[bytes, ...],
    ) -> None:
        self._edition, self._cards, self._reasons = edition, cards, reasons
        self._heads = head_values(edition.rendered, cards)
        self.subject = subject
        self.feedback_slots, self.feedback_payloads = feedback_slots, feedback_payloads

    def render(
        self,
        *,
        to: str,
        message_id: str,
        date: dt.datetime,
        dates: DateHeaders,
        unsubscribe_url: str,
        values: Mapping[str, str],
    ) -> bytes:
        """One reader's message, as ``MessageTemplate.render`` makes it."""
        edition = self._edition
        personal = personal_headers(
            to=to, message_id=message_id, date=date, dates=dates, unsubscribe_url=unsubscribe_url
        )
        check_tokens(values, self.feedback_slots)
        plain = {name: encode_value(values[name]) for name in MESSAGE_SLOTS}
        plain.update({name: encode_value(values[name]) for name in self.feedback_slots})
        out = [self.subject, edition.layout.head, personal, edition.before_text]
        self._part(out, edition.split_text, plain, html=False)
        if edition.split_html is not None:
            marked = dict(plain)  # tokens read the same in HTML; addresses and URLs may not
            for name in MESSAGE_SLOTS:
                value = values[name]
                if (escaped := html_value(value)) != value:
                    marked[name] = encode_value(escaped)
            out.append(edition.before_html)
            self._part(out, edition.split_html, marked, html=True)
        out.append(edition.after)
        return b"".join(out)

    def _part(
        self, out: list[bytes], pieces: SplitPieces, values: dict[str, bytes], *, html: bool
    ) -> None:
        edition = self._edition
        value = edition.value
        # The preview (the reader's first three titles) is nearly every reader's own:
        # kept, previews filled the cache and grew a sending process by ~25 MB.
        heads = {
            name: value(text, html=html, remember=name != "preview")
            for name, text in self._heads.items()
        }
        _splice(out, pieces.head, heads)
        ranks = edition.ranks
        for position, (card, why) in enumerate(zip(self._cards, self._reasons, strict=True)):
            fills = {"rank": ranks[position], "why": value(why, html=html)}
            if position < len(FEEDBACK_SLOTS):
                more, less = FEEDBACK_SLOTS[position]
                if more in values:
                    fills["more"], fills["less"] = values[more], values[less]
            _splice(out, pieces.cards[card], fills)
        _splice(out, pieces.foot, values)


# A piece as (literal, slot) pairs and the literal after the last slot (b"" if none).
Split = tuple[tuple[tuple[bytes, str], ...], bytes]


def _split(segments: tuple[bytes | str, ...]) -> Split:
    literals = cast(tuple[bytes, ...], segments[0::2])  # even positions: encoded literals
    slots = cast(tuple[str, ...], segments[1::2])  # odd: slot names
    tail = literals[-1] if len(literals) > len(slots) else b""
    return tuple(zip(literals[: len(slots)], slots, strict=True)), tail


def _splice(out: list[bytes], piece: Split, fills: Mapping[str, bytes]) -> None:
    pairs, tail = piece
    for literal, slot in pairs:  # no index arithmetic: measured 2x faster than a scan
        out.append(literal)
        out.append(fills[slot])
    out.append(tail)


class EncodedEdition:
    """One edition in one format, encoded; ``template(picks)`` makes a reader's template."""

    def __init__(self, rendered: RenderedEdition, layout: Layout) -> None:
        self.rendered = rendered
        self.layout = layout
        self._at = rendered.index()
        self.text = _encoded(rendered.text)
        self.html = None if rendered.html is None else _encoded(rendered.html)
        if (layout.boundary is None) != (self.html is None):
            raise ValueError("an HTML part needs a multipart layout, and only it")
        self.before_text, self.before_html, self.after = layout.frame()
        self.split_text = SplitPieces.of(self.text)
        self.split_html = None if self.html is None else SplitPieces.of(self.html)
        # Card numbers read the same in both parts (digits): encoded once.
        self.ranks = tuple(encode_value(str(n)) for n in range(1, len(FEEDBACK_SLOTS) + 1))
        self._subjects: dict[int, bytes] = {}  # folded lazily: a reader's lead card only
        self._values: dict[tuple[str, bool], bytes] = {}  # encoded why-lines, numbers...
        self._payloads = tuple(
            feedback_payloads([paper_id]) if has else ()
            for paper_id, has in zip(rendered.papers, rendered.feedback, strict=True)
        )
        parts = [self.text] if self.html is None else [self.text, self.html]
        self.size = sum(
            len(s) for part in parts for piece in _all(part) for s in piece if isinstance(s, bytes)
        )

    def template(self, picks: Sequence[Pick]) -> ReaderTemplate:
        try:
            cards = [self._at[paper_id] for paper_id, _why in picks]
        except KeyError as missing:
            raise NotInEdition(f"paper {missing} has no card in this edition") from None
        if len(cards) > len(FEEDBACK_SLOTS):
            raise ValueError(f"at most {len(FEEDBACK_SLOTS)} cards in one digest")
        slots: list[str] = []
        payloads: list[bytes] = []
        for position, card in enumerate(cards, 1):
            if self._payloads[card]:
                slots += FEEDBACK_SLOTS[position - 1]
                payloads += self._payloads[card]
        return ReaderTemplate(
            self,
            cards,
            [why for _paper, why in picks],
            subject=self._subject(cards[0] if cards else -1),
            feedback_slots=tuple(slots),
            feedback_payloads=tuple(payloads),
        )

    def value(self, text: str, *, html: bool, remember: bool = True) -> bytes:
        """A per-selection value (a why-line, a card number, the intro) encoded for one
        part; remembered, since readers share most of them, unless ``remember`` is False
        (a value that is nearly every reader's own)."""
        key = (text, html)
        if not remember:
            return self._values.get(key) or encode_value(escaped(text) if html else text)
        if (found := self._values.get(key)) is None:
            if len(self._values) >= WHY_CACHE:
                self._values.clear()
            found = self._values[key] = encode_value(escaped(text) if html else text)
        return found

    def _subject(self, card: int) -> bytes:
        if (line := self._subjects.get(card)) is None:
            text = self.rendered.subjects[card] if card >= 0 else self.rendered.empty_subject
            line = self._subjects[card] = subject_header(text)
        return line


@dataclass(frozen=True, slots=True)
class SplitPieces:
    """One MIME part's pieces as ``_splice`` reads them."""

    head: Split
    cards: tuple[Split, ...]
    foot: Split

    @classmethod
    def of(cls, pieces: Pieces[bytes]) -> SplitPieces:
        return cls(_split(pieces.head), tuple(map(_split, pieces.cards)), _split(pieces.foot))


def _encoded(pieces: Pieces[str]) -> Pieces[bytes]:
    """The same pieces with every literal quoted-printable-encoded (b"" when empty)."""
    return Pieces(
        head=_alternating(pieces.head),
        cards=tuple(_alternating(card) for card in pieces.cards),
        foot=_alternating(pieces.foot),
    )


def _alternating(segments: tuple[str, ...]) -> tuple[bytes | str, ...]:
    out: list[bytes | str] = []
    for i, segment in enumerate(segments):
        if i % 2:
            out.append(segment)
        else:
            encoded = encode_segments((segment,))
            out.append(encoded[0] if encoded else b"")
    return tuple(out)


def _all(pieces: Pieces[bytes]) -> list[tuple[bytes | str, ...]]:
    return [pieces.head, *pieces.cards, pieces.foot]
