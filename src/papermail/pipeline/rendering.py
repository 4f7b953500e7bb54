"""Email rendering: Jinja2 -> MJML -> HTML once per edition and format, in pieces.

An edition's digest is rendered once with every card of its pool, then cut into pieces
(a head, one piece per card, a foot: pieces.py) at markers the templates emit between
cards. A reader's digest is their cards' pieces joined in their order, so personalising
one email is a join, never an MJML compile.

Templates mark per-reader values with ``{{ slot("unsubscribe_url") }}``. The marker
carries a random nonce made for that render call, so text inside a paper title cannot
forge one: only the exact markers this call emitted are split out, and their count is
checked against the number of ``slot()`` calls.

Each card's "More like this" / "Less like this" links end in a slot (``more`` / ``less``,
renamed to the card's position when a reader's digest is assembled): the token there is
signed for one reader, paper and direction, so it is made per message. The rest of the
URL (``DigestContent.feedback_url``) is compiled in, which keeps each value short (one
encoded line) and the per-message work to a signature.
"""

from __future__ import annotations

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
from papermail.pipeline.pieces import (
    CARD_BREAK,
    TEMPLATE_SLOTS,
    Pieces,
    RenderedEdition,
    RenderedVariant,
)
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
from papermail.subscribers.tokens import MAX_AGE, Purpose, feedback_safe

log = logging.getLogger(__name__)

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
    # Where it comes from: "Trending on Hugging Face" or "New on arXiv · cs.RO"; arXiv's
    # abstract page and PDF when the id is an arXiv id.
    source_line: str = "Trending on Hugging Face"
    abstract_url: str | None = None
    pdf_url: str | None = None

    @classmethod
    def from_paper(cls, paper: Paper, *, reason: str, url: str) -> PaperCard:
        arxiv_id = paper.id if ARXIV_ID.fullmatch(paper.id) else None
        line = source_line(paper)
        if arxiv_id and line.startswith("New on arXiv"):
            url = f"https://arxiv.org/abs/{arxiv_id}"  # Hugging Face has no page for it yet
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
            source_line=line,
            abstract_url=f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else None,
            pdf_url=f"https://arxiv.org/pdf/{arxiv_id}" if arxiv_id else None,
        )


# New-style arXiv ids (2611.01234) and old-style ones (math/0601001): safe in a URL path.
ARXIV_ID = re.compile(r"(?:\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})")


def source_line(paper: Paper) -> str:
    """ "New on arXiv · cs.RO" for a paper only arXiv has announced, else trending on HF."""
    if paper.source == "arxiv" and paper.submitted_on_daily_at is None:
        primary = next(iter(paper.categories or ()), None)
        return f"New on arXiv · {squash(primary)}" if primary else "New on arXiv"
    return "Trending on Hugging Face"


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
        names = "|".join(TEMPLATE_SLOTS)
        self._pattern = re.compile(rf"@@pm\.{self.nonce}\.({names})@@")

    def __call__(self, name: str) -> Markup:
        if name not in TEMPLATE_SLOTS:
            raise RenderError(f"unknown slot {name!r}; expected one of {TEMPLATE_SLOTS}")
        self.emitted += 1
        # Safe as Markup: name is one of TEMPLATE_SLOTS and the nonce is hex, nothing untrusted.
        return Markup(f"@@pm.{self.nonce}.{name}@@")  # noqa: S704

    def split(self, rendered: str) -> tuple[str, ...]:
        segments = tuple(self._pattern.split(rendered))  # the capture group keeps names
        if len(segments) // 2 != self.emitted:
            raise RenderError(f"{self.emitted} slots emitted, {len(segments) // 2} found")
        return segments


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


def _digest_context(content: DigestContent) -> dict[str, Any]:
    day = content.edition_day
    feedback_url = http_url(content.feedback_url)
    return {
        "content": content,
        "papers": content.papers,
        # Whether each card gets feedback links (only an id a token can name does).
        "feedback": [bool(feedback_url) and feedback_safe(c.paper_id) for c in content.papers],
        "feedback_url": feedback_url,
        "weekly": content.edition_kind == "weekly",
        "heading": edition_heading(day, content.edition_kind),
        "short_date": short_date(day),
        "web_url": http_url(content.web_url),
    }


def _render_pieces(
    env: jinja2.Environment, name: str, context: dict[str, Any], *, mjml: bool
) -> Pieces:
    """Render one part with every card, then cut it at the card breaks."""
    slots = _Slots()
    rendered = env.get_template(name).render(context, slot=slots)
    rendered = _compile_mjml(rendered) if mjml else _tidy_text(rendered)
    segments = slots.split(rendered)
    groups: list[list[str]] = [[segments[0]]]
    for i in range(1, len(segments), 2):
        if segments[i] == CARD_BREAK:
            groups.append([segments[i + 1]])
        else:
            groups[-1] += (segments[i], segments[i + 1])
    cards = len(context["papers"])
    if len(groups) != cards + 2:
        raise RenderError(f"{name}: {len(groups) - 2} card pieces for {cards} cards")
    return Pieces(
        head=tuple(groups[0]), cards=tuple(map(tuple, groups[1:-1])), foot=tuple(groups[-1])
    )


def render_edition(env: jinja2.Environment, content: DigestContent) -> RenderedEdition:
    """Render an edition's pool of cards once for one format, in pieces (pieces.py)."""
    if content.format not in FORMATS:
        raise ValueError(f"unknown format {content.format!r}")
    if len(content.papers) > len({c.paper_id for c in content.papers}):
        raise ValueError("a paper appears twice in the edition's cards")
    context = _digest_context(content)
    subject = env.get_template("email/digest/subject.txt.j2")
    html = None
    if content.format == "html":
        html = _render_pieces(env, "email/digest/body.mjml.j2", context, mjml=True)
    return RenderedEdition(
        weekly=context["weekly"],
        papers=tuple(card.paper_id for card in content.papers),
        subjects=tuple(one_line(subject.render(context, papers=[card])) for card in content.papers),
        empty_subject=one_line(subject.render(context, papers=[])),
        titles=tuple(shorten(card.title, limit=60) for card in content.papers),
        feedback=tuple(context["feedback"]),
        text=_render_pieces(env, "email/digest/body.txt.j2", context, mjml=False),
        html=html,
    )


def render_digest(env: jinja2.Environment, content: DigestContent) -> RenderedVariant:
    """One digest of exactly ``content.papers``, each with its own reason, in order
    (previews and tests; sending assembles from the edition's pieces the same way)."""
    edition = render_edition(env, content)
    return edition.variant([(card.paper_id, card.reason) for card in content.papers])


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


class EditionStore:
    """Rendered editions in Redis, so every worker renders each edition once per TTL."""

    def __init__(
        self, redis: Redis, *, ttl_seconds: int, prefix: str = "papermail:edition:"
    ) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._prefix = prefix

    @staticmethod
    def key(edition_id: int) -> str:
        return str(edition_id)

    def get(self, key: str) -> RenderedEdition | None:
        raw = self._redis.get(self._prefix + key)
        if raw is None:
            return None
        try:
            return RenderedEdition.from_json(raw)
        except (ValueError, KeyError, TypeError):
            # A corrupt or old-shaped entry is a miss: the caller re-renders and overwrites.
            log.warning("discarding unreadable cached edition %s", key)
            return None

    def put(self, key: str, edition: RenderedEdition) -> None:
        self._redis.set(self._prefix + key, edition.to_json(), ex=self._ttl)
