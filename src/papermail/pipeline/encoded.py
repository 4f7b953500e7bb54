"""An edition's pieces, encoded once: each reader's message template is then a join.

``EncodedEdition`` quoted-printable-encodes every literal of a rendered edition's pieces
(pieces.py) once per sending process. Every encoded literal ends on a (soft) line break
(messages.py), so pieces encoded apart join into valid quoted-printable in any order: a
reader's template is the head, their cards and the foot, with the few per-selection
values (intro, preview line, card numbers, why-lines) encoded as they are joined. The
per-message values (address, signed links) are filled by ``MessageTemplate.render``.
"""

from __future__ import annotations

from collections.abc import Sequence

from papermail.pipeline.messages import (
    Layout,
    MessageTemplate,
    Segment,
    encode_segments,
    encode_value,
    subject_header,
)
from papermail.pipeline.pieces import (
    FEEDBACK_SLOTS,
    Pick,
    Pieces,
    RenderedEdition,
    assemble,
    escaped,
    head_values,
)
from papermail.subscribers.tokens import feedback_payloads


class NotInEdition(LookupError):
    """A selection names a paper the edition has no card for."""


class EncodedEdition:
    """One edition in one format, encoded; ``template(picks)`` makes a reader's template."""

    def __init__(self, rendered: RenderedEdition, layout: Layout) -> None:
        self.rendered = rendered
        self.layout = layout
        self._at = rendered.index()
        self._text = _encoded(rendered.text)
        self._html = None if rendered.html is None else _encoded(rendered.html)
        self._subjects: dict[int, bytes] = {}  # folded lazily: a reader's lead card only
        self._payloads = tuple(
            feedback_payloads([paper_id]) if has else ()
            for paper_id, has in zip(rendered.papers, rendered.feedback, strict=True)
        )
        parts = [self._text] if self._html is None else [self._text, self._html]
        self.size = sum(
            len(s) for part in parts for piece in _all(part) for s in piece if isinstance(s, bytes)
        )

    def template(self, picks: Sequence[Pick]) -> MessageTemplate:
        try:
            cards = [self._at[paper_id] for paper_id, _why in picks]
        except KeyError as missing:
            raise NotInEdition(f"paper {missing} has no card in this edition") from None
        heads = head_values(self.rendered, cards)
        reasons = [why for _paper, why in picks]
        text = assemble(self._text, cards, heads, reasons, value=encode_value, literal=bytes)
        html = None
        if self._html is not None:
            html = assemble(self._html, cards, heads, reasons, value=_html_value, literal=bytes)
        slots: list[str] = []
        payloads: list[bytes] = []
        for position, card in enumerate(cards, 1):
            if self._payloads[card]:
                slots += FEEDBACK_SLOTS[position - 1]
                payloads += self._payloads[card]
        return self.layout.template(
            subject=self._subject(cards[0] if cards else -1),
            text_part=_segments(text),
            html_part=None if html is None else _segments(html),
            feedback_slots=tuple(slots),
            feedback_payloads=tuple(payloads),
        )

    def _subject(self, card: int) -> bytes:
        if (line := self._subjects.get(card)) is None:
            text = self.rendered.subjects[card] if card >= 0 else self.rendered.empty_subject
            line = self._subjects[card] = subject_header(text)
        return line


def _html_value(text: str) -> bytes:
    return encode_value(escaped(text))


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


def _segments(parts: Sequence[bytes | str]) -> list[Segment]:
    return list(parts)
