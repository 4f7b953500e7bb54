"""Email rendering: Jinja2 -> MJML -> HTML once per variant, then cheap per-subscriber fills.

A digest *variant* is what a group of subscribers share (edition, selected papers with
reasons, format). It is compiled once into *segments*: literal text alternating with slot
names, so personalising one email is a string join, never an MJML compile.

Templates mark per-subscriber values with ``{{ slot("unsubscribe_url") }}``. The marker
carries a random nonce made for that render call, so text inside a paper title cannot
forge one: only the exact markers this call emitted are split out, and their count is
checked against the number of ``slot()`` calls.

Each card's "More like this" / "Less like this" links end in a slot, one per card
position and direction (``more_1``, ``less_1``, ...): the token there is signed for one
reader, paper and direction, so it is made per message (see ``feedback_plan``). The
rest of the URL (``DigestContent.feedback_url``) is compiled into the variant, which
keeps each value short (one encoded line) and the per-message work to a signature.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from mjml import mjml2html
from redis import Redis

from papermail.dates import edition_heading, short_date
from papermail.models import Paper
from papermail.pipeline.text import (
    authors_line,
    compact,
    counted,
    http_url,
    one_line,
    shorten,
    squash,
    wrap,
)
from papermail.subscribers.tokens import MAX_AGE, Purpose, feedback_payloads, feedback_safe

log = logging.getLogger(__name__)

MAX_FEEDBACK_CARDS = 50  # cards with feedback links (a reader chooses at most 30 papers)
# (more, less) slot names for the card at each position, 1-based like the card numbers.
FEEDBACK_SLOTS: tuple[tuple[str, str], ...] = tuple(
    (f"more_{n}", f"less_{n}") for n in range(1, MAX_FEEDBACK_CARDS + 1)
)
_FEEDBACK_POSITION = {name: n for n, pair in enumerate(FEEDBACK_SLOTS, 1) for name in pair}
SLOTS = ("email", "preferences_url", "unsubscribe_url") + tuple(
    name for pair in FEEDBACK_SLOTS for name in pair
)
SUMMARY_MAX = 300
FORMATS = ("html", "text")


class RenderError(RuntimeError):
    """A template produced something we refuse to send (e.g. slot markers went missing)."""


# -- content -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaperCard:
    paper_id: str
    title: str
    url: str
    authors_line: str
    organization: str | None
    upvotes: int
    num_comments: int
    github_repo: str | None
    github_stars: int | None
    project_page: str | None
    summary: str
    reason: str

    @classmethod
    def from_paper(cls, paper: Paper, *, reason: str, url: str) -> PaperCard:
        return cls(
            paper_id=paper.id,
            title=squash(paper.title),
            url=url,
            authors_line=authors_line(paper.authors or []),
            organization=squash(paper.organization or "") or None,
            upvotes=paper.upvotes or 0,
            num_comments=paper.num_comments or 0,
            github_repo=paper.github_repo or None,
            github_stars=paper.github_stars,
            project_page=paper.project_page or None,
            summary=shorten(
                squash(paper.ai_summary or "") or paper.summary or "", limit=SUMMARY_MAX
            ),
            reason=squash(reason),
        )


@dataclass(frozen=True, slots=True)
class DigestContent:
    edition_day: date
    edition_kind: str  # "daily" | "weekly"
    web_url: str
    papers: tuple[PaperCard, ...]
    format: str  # "html" | "text"
    # What each card's feedback links start with, up to the token (Links.feedback_prefix);
    # "" renders cards without them.
    feedback_url: str
    list_name: str = "papermail daily papers"


@dataclass(frozen=True, slots=True)
class RenderedVariant:
    subject: str
    text: tuple[str, ...]  # even index = literal text, odd index = a name from SLOTS
    html: tuple[str, ...] | None  # same scheme; None for text-only subscribers
    papers: tuple[str, ...] = ()  # each card's paper id, in card order (for feedback links)

    def to_json(self) -> str:
        data = {
            "subject": self.subject,
            "text": list(self.text),
            "html": None if self.html is None else list(self.html),
            "papers": list(self.papers),
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> RenderedVariant:
        data = json.loads(raw)
        html = data["html"]
        papers = data.get("papers", [])
        if not isinstance(papers, list) or not all(isinstance(p, str) for p in papers):
            raise ValueError("papers must be a list of paper ids")
        # one_line again: whatever sits in Redis must not be able to inject a header.
        variant = cls(
            subject=one_line(str(data["subject"])),
            text=_checked_segments(data["text"]),
            html=None if html is None else _checked_segments(html),
            papers=tuple(papers),
        )
        feedback_plan(variant)  # every feedback slot names a card that can carry one
        return variant


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A one-off email with nothing left to fill in (e.g. the opt-in confirmation)."""

    subject: str
    text: str
    html: str


# -- environment and slots ------------------------------------------------------------------


def make_environment(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        # Unknown extensions escape too: forgetting to escape is the dangerous default.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "mjml.j2", "html", "xml"),
            disabled_extensions=("txt.j2",),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        http_url=http_url,
        compact=compact,
        counted=counted,
        wrap=wrap,
        shorten=lambda text, limit: shorten(text, limit=limit),
    )
    return env


class _Slots:
    """The ``slot()`` template function for one render call: nonce-tagged, counted markers."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(16)
        self.emitted = 0
        # Only [A-Za-z0-9@.] so neither HTML escaping nor MJML can alter a marker.
        names = "|".join(SLOTS)
        self._pattern = re.compile(rf"@@pm\.{self.nonce}\.({names})@@")

    def __call__(self, name: str) -> Markup:
        if name not in SLOTS:
            raise RenderError(f"unknown slot {name!r}; expected one of {SLOTS}")
        self.emitted += 1
        # Safe as Markup: name is one of SLOTS and the nonce is hex, nothing untrusted.
        return Markup(f"@@pm.{self.nonce}.{name}@@")  # noqa: S704

    def split(self, rendered: str) -> tuple[str, ...]:
        segments = tuple(self._pattern.split(rendered))  # the capture group keeps names
        if len(segments) // 2 != self.emitted:
            raise RenderError(f"{self.emitted} slots emitted, {len(segments) // 2} found")
        return segments


def _checked_segments(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) % 2 != 1 or not all(isinstance(s, str) for s in raw):
        raise ValueError("segments must be an odd-length list of strings")
    if any(name not in SLOTS for name in raw[1::2]):
        raise ValueError("segments name an unknown slot")
    return tuple(raw)


def feedback_plan(variant: RenderedVariant) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """The variant's feedback slots in card order, (more, less) for each card that has
    them, and the token payload suffix for each (subscribers.tokens.feedback_payloads).

    Made once per variant; a message's values are then the reader's tokens,
    ``zip(slots, signer.feedback_tokens(subscriber_id, payload_suffixes=payloads))``.
    """
    present = {
        name for part in (variant.text, variant.html or ()) for name in part[1::2]
    } & _FEEDBACK_POSITION.keys()
    slots: list[str] = []
    papers: list[str] = []
    for position, (more, less) in enumerate(FEEDBACK_SLOTS, 1):
        if more not in present and less not in present:
            continue
        if position > len(variant.papers) or not feedback_safe(variant.papers[position - 1]):
            raise ValueError(f"feedback slots for card {position}, which cannot have them")
        slots += (more, less)
        papers.append(variant.papers[position - 1])
    return tuple(slots), feedback_payloads(papers)


def fill(segments: tuple[str, ...], values: Mapping[str, str]) -> str:
    """Join segments, substituting slots. Values must already suit the target (html-escaped
    for HTML); a missing value raises KeyError rather than send a hole."""
    return "".join(values[seg] if i % 2 else seg for i, seg in enumerate(segments))


# -- rendering ---------------------------------------------------------------------------


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def _compile_mjml(source: str) -> str:
    # fonts={}: no Google Fonts <link>; our stack is system fonts, and a remote stylesheet
    # would leak every open to a third party.
    return str(mjml2html(source, disable_comments=True, fonts={}))


def _intro(count: int, *, weekly: bool) -> str:
    if count == 0:
        when = "this week" if weekly else "today"
        return f"Nothing trending matched your preferences {when}. More soon."
    if weekly:
        return f"The {counted(count, 'paper')} that trended most this week, picked for you."
    return f"Today's {counted(count, 'paper')} with the most upvotes and momentum, picked for you."


def _feedback_slots(content: DigestContent) -> list[tuple[str, str] | None]:
    """Each card's (more, less) slot names, or None for a card without feedback links."""
    if not http_url(content.feedback_url):
        return [None] * len(content.papers)
    return [
        FEEDBACK_SLOTS[i] if i < MAX_FEEDBACK_CARDS and feedback_safe(card.paper_id) else None
        for i, card in enumerate(content.papers)
    ]


def _digest_context(content: DigestContent) -> dict[str, Any]:
    day = content.edition_day
    weekly = content.edition_kind == "weekly"
    return {
        "content": content,
        "papers": content.papers,
        "feedback": _feedback_slots(content),
        "feedback_url": http_url(content.feedback_url),
        "weekly": weekly,
        "heading": edition_heading(day, content.edition_kind),
        "short_date": short_date(day),
        "intro": _intro(len(content.papers), weekly=weekly),
        "web_url": http_url(content.web_url),
    }


def _render_segments(
    env: jinja2.Environment, name: str, context: dict[str, Any], *, mjml: bool
) -> tuple[str, ...]:
    slots = _Slots()
    rendered = env.get_template(name).render(context, slot=slots)
    rendered = _compile_mjml(rendered) if mjml else _tidy_text(rendered)
    return slots.split(rendered)


def render_digest(env: jinja2.Environment, content: DigestContent) -> RenderedVariant:
    """Compile one digest variant: subject, text segments and (for html) HTML segments."""
    if content.format not in FORMATS:
        raise ValueError(f"unknown format {content.format!r}")
    context = _digest_context(content)
    subject = one_line(env.get_template("email/digest/subject.txt.j2").render(context))
    text = _render_segments(env, "email/digest/body.txt.j2", context, mjml=False)
    html = None
    if content.format == "html":
        html = _render_segments(env, "email/digest/body.mjml.j2", context, mjml=True)
    papers = tuple(card.paper_id for card in content.papers)
    return RenderedVariant(subject=subject, text=text, html=html, papers=papers)


def render_confirmation(
    env: jinja2.Environment, *, confirm_url: str, email: str, topics: list[str], frequency: str
) -> RenderedEmail:
    """The double opt-in email. Rendered per request: one compile, no slots."""
    url = http_url(confirm_url)
    if not url:
        raise ValueError("confirm_url must be an absolute http(s) URL")
    max_age = MAX_AGE[Purpose.CONFIRM]
    context = {
        "confirm_url": url,
        "email": email,
        "frequency": str(frequency),
        "topics": [squash(t) for t in topics if t.strip()],
        "valid_hours": None if max_age is None else int(max_age.total_seconds() // 3600),
    }

    def render(name: str) -> str:
        return env.get_template(f"email/confirm/{name}").render(context)

    return RenderedEmail(
        subject=one_line(render("subject.txt.j2")),
        text=_tidy_text(render("body.txt.j2")),
        html=_compile_mjml(render("body.mjml.j2")),
    )


# -- cache --------------------------------------------------------------------------------


class VariantStore:
    """Compiled variants in Redis, so every worker compiles each variant once per TTL."""

    def __init__(
        self, redis: Redis, *, ttl_seconds: int, prefix: str = "papermail:variant:"
    ) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._prefix = prefix

    def get(self, key: str) -> RenderedVariant | None:
        raw = self._redis.get(self._prefix + key)
        if raw is None:
            return None
        try:
            return RenderedVariant.from_json(raw)
        except (ValueError, KeyError, TypeError):
            # A corrupt or old-shaped entry is a miss: the caller re-renders and overwrites.
            log.warning("discarding unreadable cached variant %s", key)
            return None

    def put(self, key: str, variant: RenderedVariant) -> None:
        self._redis.set(self._prefix + key, variant.to_json(), ex=self._ttl)
