"""An edition rendered once, in pieces: a layout head, one piece per paper card, a foot.

Every reader's digest is cut from the same pieces: the head, *their* cards in *their*
order, the foot. Rendering (Jinja2 -> MJML -> HTML) happens once per edition and format
(rendering.render_edition); a reader's message is then a join (here for strings,
encoded.py for pre-encoded bytes), so MJML is never compiled per reader.

Segments alternate literal text and slot names (rendering's scheme). Three kinds of slot:

* the edition's *variant* slots, filled once per selection: ``intro`` and ``preview`` in
  the head; ``rank`` and ``why`` in each card (its position, its why-line);
* each card's ``more`` / ``less``, renamed to its position's feedback slot (``more_3``)
  and filled per message with a token signed for that reader, paper and direction;
* the foot's per-message slots (``email``, ``preferences_url``, ``unsubscribe_url``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import markupsafe

from papermail.pipeline.text import counted, one_line

MESSAGE_SLOTS = ("email", "preferences_url", "unsubscribe_url")
MAX_FEEDBACK_CARDS = 50  # cards with feedback links (a reader chooses at most 30 papers)
# (more, less) slot names for the card at each position, 1-based like the card numbers.
FEEDBACK_SLOTS: tuple[tuple[str, str], ...] = tuple(
    (f"more_{n}", f"less_{n}") for n in range(1, MAX_FEEDBACK_CARDS + 1)
)
HEAD_SLOTS = ("intro", "preview")
CARD_SLOTS = ("rank", "why", "more", "less")
CARD_BREAK = "card_break"  # where rendering cuts the document into pieces
# Every name a template may emit, and every name an assembled variant may still hold.
TEMPLATE_SLOTS = MESSAGE_SLOTS + HEAD_SLOTS + CARD_SLOTS + (CARD_BREAK,)
SLOTS = MESSAGE_SLOTS + tuple(name for pair in FEEDBACK_SLOTS for name in pair)

Pick = tuple[str, str]  # (paper id, why-line): one card of a reader's selection
T = TypeVar("T", str, bytes)  # what assembly makes of literals and values
L = TypeVar("L", str, bytes)  # what a piece's literals are: text, or pre-encoded bytes


class Slot(str):
    """A per-message slot's name in assembled output (where literals may be ``str`` too)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Pieces(Generic[L]):
    """One MIME part of an edition, cut at the cards: even positions literals, odd slots."""

    head: tuple[L | str, ...]
    cards: tuple[tuple[L | str, ...], ...]  # in the edition's card order
    foot: tuple[L | str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "head": list(self.head),
            "cards": [list(c) for c in self.cards],
            "foot": list(self.foot),
        }

    @classmethod
    def from_json(cls, data: Any) -> Pieces[str]:
        if not isinstance(data, dict) or not isinstance(data.get("cards"), list):
            raise ValueError("pieces must be an object with head, cards and foot")
        return Pieces(
            head=checked(data["head"], HEAD_SLOTS),
            cards=tuple(checked(card, CARD_SLOTS) for card in data["cards"]),
            foot=checked(data["foot"], MESSAGE_SLOTS),
        )


@dataclass(frozen=True, slots=True)
class RenderedEdition:
    """An edition's pool of cards, rendered once for one format."""

    weekly: bool
    papers: tuple[str, ...]  # each card's paper id, in card order
    subjects: tuple[str, ...]  # the subject line when that card leads the digest
    empty_subject: str  # ... when no card does
    titles: tuple[str, ...]  # each card's title as the inbox preview line shows it
    feedback: tuple[bool, ...]  # whether each card carries feedback links
    text: Pieces[str]
    html: Pieces[str] | None  # None for text-only readers

    def __post_init__(self) -> None:
        n = len(self.papers)
        counts = {len(self.subjects), len(self.titles), len(self.feedback), len(self.text.cards)}
        if counts != {n} or (self.html is not None and len(self.html.cards) != n):
            raise ValueError("one subject, title, feedback flag and piece per card")

    def index(self) -> dict[str, int]:
        return {paper_id: i for i, paper_id in enumerate(self.papers)}

    def variant(self, picks: Sequence[Pick]) -> RenderedVariant:
        """One selection's digest as text segments whose slots are all per message."""
        at = self.index()
        cards = [at[paper_id] for paper_id, _why in picks]
        heads = head_values(self, cards)
        reasons = [why for _paper, why in picks]
        text = assemble(self.text, cards, heads, reasons, value=str, literal=str)
        html = None
        if self.html is not None:
            html = assemble(self.html, cards, heads, reasons, value=escaped, literal=str)
        return RenderedVariant(
            subject=subject_for(self, cards),
            text=_merged(text),
            html=None if html is None else _merged(html),
            papers=tuple(self.papers[i] for i in cards),
            feedback=tuple(self.feedback[i] for i in cards),
        )

    def to_json(self) -> str:
        data = {
            "weekly": self.weekly,
            "papers": list(self.papers),
            "subjects": list(self.subjects),
            "empty_subject": self.empty_subject,
            "titles": list(self.titles),
            "feedback": list(self.feedback),
            "text": self.text.as_json(),
            "html": None if self.html is None else self.html.as_json(),
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> RenderedEdition:
        data = json.loads(raw)
        strings = ("papers", "subjects", "titles")
        if not all(_strings(data.get(name)) for name in strings):
            raise ValueError("papers, subjects and titles must be lists of strings")
        # one_line again: whatever sits in Redis must not be able to inject a header.
        return cls(
            weekly=bool(data["weekly"]),
            papers=tuple(data["papers"]),
            subjects=tuple(one_line(s) for s in data["subjects"]),
            empty_subject=one_line(str(data["empty_subject"])),
            titles=tuple(data["titles"]),
            feedback=tuple(bool(f) for f in data["feedback"]),
            text=Pieces.from_json(data["text"]),
            html=None if data["html"] is None else Pieces.from_json(data["html"]),
        )


@dataclass(frozen=True, slots=True)
class RenderedVariant:
    """One selection's digest; its slots are the per-message ones (SLOTS)."""

    subject: str
    text: tuple[str, ...]  # even index = literal text, odd index = a name from SLOTS
    html: tuple[str, ...] | None
    papers: tuple[str, ...] = ()  # each card's paper id, in card order
    feedback: tuple[bool, ...] = ()  # whether each card carries feedback links

    def feedback_papers(self) -> list[str]:
        """The papers whose cards carry feedback links, in card order."""
        return [p for p, has in zip(self.papers, self.feedback, strict=True) if has]

    def feedback_slots(self) -> list[str]:
        """Those cards' (more, less) slot names, in the same order."""
        return [
            name
            for position, has in enumerate(self.feedback, 1)
            if has
            for name in FEEDBACK_SLOTS[position - 1]
        ]


# -- assembly, shared by the string form (previews) and the encoded one (sending) ------------


def intro(count: int, *, weekly: bool) -> str:
    if count == 0:
        when = "this week" if weekly else "today"
        return f"Nothing new matched your preferences {when}. More soon."
    when = "this week's" if weekly else "today's"
    return f"{counted(count, 'paper').capitalize()} from {when} new research, picked for you."


def head_values(edition: RenderedEdition, cards: Sequence[int]) -> dict[str, str]:
    opening = intro(len(cards), weekly=edition.weekly)
    titles = [edition.titles[i] for i in cards[:3]]
    return {"intro": opening, "preview": " · ".join(titles) if titles else opening}


def subject_for(edition: RenderedEdition, cards: Sequence[int]) -> str:
    return edition.subjects[cards[0]] if cards else edition.empty_subject


def assemble(
    pieces: Pieces[L],
    cards: Sequence[int],
    heads: dict[str, str],
    reasons: Sequence[str],
    *,
    value: Callable[[str], T],
    literal: Callable[[L], T],
) -> list[T | Slot]:
    """Head, the chosen cards in order, foot: literals as ``literal`` makes them, variant
    slots filled with ``value`` of their text; the per-message slots stay names."""
    out: list[T | Slot] = []
    _append(out, pieces.head, heads, value, literal)
    for position, (card, why) in enumerate(zip(cards, reasons, strict=True), 1):
        more, less = FEEDBACK_SLOTS[position - 1] if position <= MAX_FEEDBACK_CARDS else ("", "")
        fills = {"rank": str(position), "why": why}
        for i, segment in enumerate(pieces.cards[card]):
            if not i % 2:
                if segment:
                    out.append(literal(segment))  # type: ignore[arg-type]  # even: a literal
            elif (name := str(segment)) in fills:  # odd: a slot name
                out.append(value(fills[name]))
            elif more:  # "more" / "less": this position's feedback slot
                out.append(Slot(more if name == "more" else less))
            else:
                raise ValueError(f"no feedback slot for card {position}")
    _append(out, pieces.foot, {}, value, literal)
    return out


def _append(
    out: list[T | Slot],
    segments: tuple[L | str, ...],
    fills: dict[str, str],
    value: Callable[[str], T],
    literal: Callable[[L], T],
) -> None:
    for i, segment in enumerate(segments):
        if not i % 2:
            if segment:
                out.append(literal(segment))  # type: ignore[arg-type]  # even: a literal
        elif (name := str(segment)) in fills:  # odd: a slot name
            out.append(value(fills[name]))
        else:
            out.append(Slot(name))


def escaped(text: str) -> str:
    """HTML-escaped, quotes too: what a value becomes in the HTML part (as Jinja2's
    autoescape writes it, so a title reads the same in a why-line as on its card)."""
    return str(markupsafe.escape(text))


def _merged(parts: list[str | Slot]) -> tuple[str, ...]:
    """rendering's alternating form (literal, slot, literal, ...) from assembled parts."""
    out = [""]
    for part in parts:
        if isinstance(part, Slot):
            out += (str(part), "")
        else:
            out[-1] += part
    return tuple(out)


def checked(raw: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) % 2 != 1 or not _strings(raw):
        raise ValueError("segments must be an odd-length list of strings")
    if any(name not in allowed for name in raw[1::2]):
        raise ValueError("segments name an unknown slot")
    return tuple(raw)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)
