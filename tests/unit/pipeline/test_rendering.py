"""Email rendering: templates compile, untrusted data stays inert, slots fill, cache works."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
from html.parser import HTMLParser

import fakeredis
import jinja2
import pytest

from papermail.config import Settings
from papermail.models import EditionKind, MailFormat, Paper
from papermail.pipeline import rendering
from papermail.pipeline.pieces import FEEDBACK_SLOTS, RenderedEdition, RenderedVariant
from papermail.pipeline.rendering import (
    DigestContent,
    EditionStore,
    PaperCard,
    RenderError,
    authors_line,
    compact,
    fill,
    make_environment,
    render_confirmation,
    render_digest,
    render_edition,
)
from papermail.subscribers.tokens import Links, Purpose, feedback_payloads

DAY = dt.date(2026, 11, 26)  # a Thursday
WEB_URL = "https://papers.example.org/editions/2026-11-26"
FEEDBACK_URL = "https://papers.example.org/feedback/"
FOOTER_SLOTS = ("email", "preferences_url", "unsubscribe_url")
VALUES = {
    "email": "reader@example.org",
    "preferences_url": "https://papers.example.org/preferences/tok-p",
    "unsubscribe_url": "https://papers.example.org/unsubscribe/tok-u",
    # Each card's feedback links end in a token made per message.
    **{name: f"tok-{name}" for pair in FEEDBACK_SLOTS for name in pair},
}
LONG_ABSTRACT = (
    "Diffusion models learn to reverse a gradual noising process and now "
    "dominate image, audio and video generation benchmarks. "
) * 30
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(1)</script>'


class _Tags(HTMLParser):
    """Every live start tag with its attributes (comments such as MSO blocks ignored)."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: list[dict[str, str | None]] = []
        self.anchors: list[tuple[str | None, str]] = []  # (href, text)
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._open.append({"href": dict(attrs).get("href"), "text": ""})

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1]["text"] = (self._open[-1]["text"] or "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            anchor = self._open.pop()
            self.anchors.append((anchor["href"], (anchor["text"] or "").strip()))

    def href(self, text: str) -> str | None:
        return next(href for href, label in self.anchors if label == text)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def _text_of(markup: str) -> str:
    """Visible text of HTML (entities decoded, tags dropped), whitespace collapsed."""
    parser = _Text()
    parser.feed(markup)
    return " ".join("".join(parser.chunks).split())


@pytest.fixture
def env(settings: Settings) -> jinja2.Environment:
    return make_environment(settings.templates_dir)


def make_paper(i: int = 1, **overrides: object) -> Paper:
    fields: dict[str, object] = {
        "id": f"2611.{i:05d}",
        "title": f"Scaling Diffusion Transformers, part {i}",
        "summary": LONG_ABSTRACT,
        "authors": ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"],
        "upvotes": 1234,
        "num_comments": 4,
        "github_repo": "https://github.com/example/dit",
        "github_stars": 1234,
        "project_page": "https://dit.example.org",
        "organization": "Example Lab",
        "ai_summary": None,
    }
    fields.update(overrides)
    return Paper(**fields)


def make_card(i: int = 1, *, reason: str = "Trending", **overrides: object) -> PaperCard:
    paper = make_paper(i, **overrides)
    return PaperCard.from_paper(
        paper, reason=reason, url=f"https://huggingface.co/papers/{paper.id}"
    )


def make_content(
    *cards: PaperCard, kind: str = EditionKind.DAILY, fmt: str = MailFormat.HTML
) -> DigestContent:
    return DigestContent(
        edition_day=DAY,
        edition_kind=kind,
        web_url=WEB_URL,
        papers=cards or (make_card(),),
        format=fmt,
        feedback_url=FEEDBACK_URL,
    )


def filled_html(variant: RenderedVariant, values: dict[str, str] = VALUES) -> str:
    assert variant.html is not None
    return fill(variant.html, {k: html.escape(v) for k, v in values.items()})


# -- every template compiles ----------------------------------------------------------


def test_daily_digest_renders_html_and_text(env: jinja2.Environment) -> None:
    cards = (make_card(1, reason="Matches your topic “diffusion”"), make_card(2))
    variant = render_digest(env, make_content(*cards))
    page, text = filled_html(variant), fill(variant.text, VALUES)

    assert variant.subject == "Trending papers, 26 Nov: Scaling Diffusion Transformers, part 1"
    for part in (page, text):
        assert "Trending papers · Thursday, 26 November 2026" in part
        assert "Scaling Diffusion Transformers, part 2" in part
        assert "You receive this because reader@example.org subscribed." in part
        assert "Why: Matches your topic “diffusion”" in part
        assert "Why: Trending" in part
    assert (
        "Trending on Hugging Face · ▲ 1.2k upvotes · 💬 4 comments · Code ★ 1.2k · Project page"
        " · Abstract · PDF"
    ) in _text_of(page)
    assert (
        "    Trending on Hugging Face · ▲ 1.2k upvotes · 💬 4 comments\n"
        "    Code ★ 1.2k: https://github.com/example/dit\n"
        "    Project page: https://dit.example.org\n"
        "    Abstract: https://arxiv.org/abs/2611.00001 · PDF: https://arxiv.org/pdf/2611.00001\n"
    ) in text
    assert tags_of_arxiv(page)[:2] == [
        "https://arxiv.org/abs/2611.00001",
        "https://arxiv.org/pdf/2611.00001",
    ]
    assert page.startswith("<!doctype html>")
    tags = _Tags(page)
    assert (
        tags.href("Scaling Diffusion Transformers, part 1")
        == "https://huggingface.co/papers/2611.00001"
    )
    assert tags.href("Code ★ 1.2k") == "https://github.com/example/dit"
    assert tags.href("Project page") == "https://dit.example.org"
    assert tags.href("View in browser") == WEB_URL
    assert "1. Scaling Diffusion Transformers, part 1\n" in text
    assert "    https://huggingface.co/papers/2611.00001\n" in text


def tags_of_arxiv(page: str) -> list[str]:
    return [h for h, _ in _Tags(page).anchors if h and h.startswith("https://arxiv.org/")]


def test_a_paper_new_on_arxiv_says_so_with_its_category(env: jinja2.Environment) -> None:
    paper = make_paper(upvotes=0, num_comments=0, github_repo=None, project_page=None)
    paper.source, paper.categories = "arxiv", ["cs.RO", "cs.LG"]
    card = PaperCard.from_paper(paper, reason="New on arXiv in cs.RO, which you follow", url="")
    variant = render_digest(env, make_content(card))
    page, text = filled_html(variant), fill(variant.text, VALUES)
    assert "New on arXiv · cs.RO · Abstract · PDF" in _text_of(page)
    assert "    New on arXiv · cs.RO\n" in text and "upvote" not in text
    assert "Why: New on arXiv in cs.RO, which you follow" in text
    # Hugging Face has no page for it: the title links arXiv's abstract.
    assert _Tags(page).href(card.title) == "https://arxiv.org/abs/2611.00001"


def test_weekly_digest_says_week_of(env: jinja2.Environment) -> None:
    variant = render_digest(env, make_content(kind=EditionKind.WEEKLY))
    assert variant.subject.startswith("Trending papers, week of 26 Nov: ")
    assert "Trending papers · Week of 26 November 2026" in filled_html(variant)
    assert "Trending papers · Week of 26 November 2026" in fill(variant.text, VALUES)
    assert "1 paper from this week's new research" in fill(variant.text, VALUES)


@pytest.mark.parametrize(
    ("day", "kind", "heading", "subject"),
    [
        (dt.date(2026, 9, 7), "daily", "Monday, 7 September 2026", "Trending papers, 7 Sep: "),
        (
            dt.date(2027, 1, 3),
            "weekly",
            "Week of 3 January 2027",
            "Trending papers, week of 3 Jan: ",
        ),
    ],
)
def test_edition_dates_are_spelled_out(
    env: jinja2.Environment, day: dt.date, kind: str, heading: str, subject: str
) -> None:
    content = DigestContent(
        edition_day=day,
        edition_kind=kind,
        web_url=WEB_URL,
        papers=(make_card(),),
        format="html",
        feedback_url=FEEDBACK_URL,
    )
    variant = render_digest(env, content)
    assert variant.subject.startswith(subject)
    assert f"Trending papers · {heading}" in filled_html(variant)


def test_text_only_variant_has_no_html(env: jinja2.Environment) -> None:
    variant = render_digest(env, make_content(fmt=MailFormat.TEXT))
    assert variant.html is None
    assert variant.text[1::2] == ("more_1", "less_1", *FOOTER_SLOTS)
    assert "Scaling Diffusion Transformers, part 1" in fill(variant.text, VALUES)


def test_digest_without_papers_still_renders(env: jinja2.Environment) -> None:
    content = DigestContent(
        edition_day=DAY,
        edition_kind="daily",
        web_url=WEB_URL,
        papers=(),
        format="html",
        feedback_url=FEEDBACK_URL,
    )
    variant = render_digest(env, content)
    assert variant.subject == "Trending papers, 26 Nov"
    assert "Nothing new matched your preferences today" in filled_html(variant)


def test_unknown_format_is_refused(env: jinja2.Environment) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render_digest(env, make_content(fmt="pdf"))


def test_confirmation_email(env: jinja2.Environment) -> None:
    url = "https://papers.example.org/confirm/abc.def"
    email = render_confirmation(
        env,
        confirm_url=url,
        email="new@example.org",
        topics=["diffusion", "LLM <agents>"],
        frequency="weekly",
    )
    assert email.subject == "Confirm your papermail subscription"
    assert _Tags(email.html).href("Confirm subscription") == url
    assert "LLM &lt;agents&gt;" in email.html and "<agents>" not in email.html
    ignore = "If you didn't ask for this, ignore this email — you won't hear from us again."
    for part in (_text_of(email.html), " ".join(email.text.split())):
        assert "new@example.org" in part
        assert "a weekly email" in part
        assert ignore in part
        assert "48 hours" in part
    assert f"\n{url}\n" in email.text


def test_confirmation_refuses_a_non_http_link(env: jinja2.Environment) -> None:
    with pytest.raises(ValueError):
        render_confirmation(
            env,
            confirm_url="javascript:alert(1)",
            email="a@example.org",
            topics=[],
            frequency="daily",
        )


def test_autoescape_is_on_for_markup_and_off_for_text(env: jinja2.Environment) -> None:
    assert callable(env.autoescape)
    assert env.autoescape("email/digest/body.mjml.j2") is True
    assert env.autoescape("web/page.html.j2") is True
    assert env.autoescape("email/digest/body.txt.j2") is False
    assert env.undefined is jinja2.StrictUndefined


# -- untrusted content stays inert ------------------------------------------------------


def test_hostile_paper_fields_are_escaped_in_html(env: jinja2.Environment) -> None:
    card = make_card(
        title=f"Title {HOSTILE}",
        organization=f"Org {HOSTILE}",
        ai_summary=f"Summary {HOSTILE}",
        authors=[f"Eve {HOSTILE}"],
        reason=f"Reason {HOSTILE}",
    )
    page = filled_html(render_digest(env, make_content(card)))

    tags = _Tags(page)
    assert not [t for t, _ in tags.tags if t in ("img", "script")]
    assert not [a for _, attrs in tags.tags for a in attrs if a.startswith("on")]
    escaped = "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"Why: Reason {escaped}" in page  # the why-line is a value, escaped the same way
    assert page.count(escaped) >= 5  # title, org, summary, authors, reason (+ title/preview)
    assert tags.href(f"Title {HOSTILE}") == "https://huggingface.co/papers/2611.00001"


def test_hostile_url_cannot_break_out_of_href(env: jinja2.Environment) -> None:
    # No whitespace, so it passes the http(s) check and reaches the attribute.
    repo = 'https://github.com/x/y"><img/src=x/onerror=alert(1)>'
    page = filled_html(render_digest(env, make_content(make_card(github_repo=repo))))
    assert 'href="https://github.com/x/y&#34;&gt;&lt;img/src=x/onerror=alert(1)&gt;"' in page
    tags = _Tags(page)
    assert tags.href("Code ★ 1.2k") == repo
    assert not [t for t, _ in tags.tags if t in ("img", "script")]
    assert not [a for _, attrs in tags.tags for a in attrs if a.startswith("on")]


@pytest.mark.parametrize(
    "bad",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<b>x</b>",
        "java\nscript:alert(1)",
        "//evil.example",
        "ftp://files.example",
    ],
)
def test_non_http_urls_render_as_no_link(env: jinja2.Environment, bad: str) -> None:
    paper = make_paper(github_repo=bad, project_page=bad)
    card = PaperCard.from_paper(paper, reason="Trending", url=bad)
    variant = render_digest(env, make_content(card))
    page, text = filled_html(variant), fill(variant.text, VALUES)
    hrefs = [href for href, _ in _Tags(page).anchors]
    assert hrefs == [
        "https://arxiv.org/abs/2611.00001",  # ours, from the arXiv id: not the bad URL
        "https://arxiv.org/pdf/2611.00001",
        FEEDBACK_URL + VALUES["more_1"],
        FEEDBACK_URL + VALUES["less_1"],
        VALUES["preferences_url"],
        VALUES["unsubscribe_url"],
        WEB_URL,
    ]
    assert "Project page" not in page and "Code" not in text
    assert "Scaling Diffusion Transformers, part 1" in page  # the title stays, unlinked
    assert bad not in text and html.escape(bad) not in page


# -- slots --------------------------------------------------------------------------------


def test_slots_sit_exactly_where_the_footer_needs_them(env: jinja2.Environment) -> None:
    variant = render_digest(env, make_content())
    assert variant.html is not None
    assert variant.html[1::2] == ("more_1", "less_1", *FOOTER_SLOTS)
    assert variant.text[1::2] == ("more_1", "less_1", *FOOTER_SLOTS)
    assert variant.html[0].endswith(f'<a href="{FEEDBACK_URL}')
    assert variant.html[2].endswith(f'<a href="{FEEDBACK_URL}')
    assert variant.html[6].endswith('subscribed.<br /><a href="')
    assert variant.html[8].endswith('<a href="')
    assert variant.text[0].endswith(f"\n    More like this: {FEEDBACK_URL}")
    assert variant.text[2].endswith(f"\n    Less like this: {FEEDBACK_URL}")
    assert variant.text[8].endswith("\nUnsubscribe: ")
    assert not any("@@pm." in seg for seg in variant.html + variant.text)


def test_fill_puts_the_unsubscribe_url_in_the_href(env: jinja2.Environment) -> None:
    variant = render_digest(env, make_content())
    tags = _Tags(filled_html(variant))
    assert tags.href("Unsubscribe") == VALUES["unsubscribe_url"]
    assert tags.href("Preferences") == VALUES["preferences_url"]
    assert f"Unsubscribe: {VALUES['unsubscribe_url']}\n" in fill(variant.text, VALUES)


def test_real_signed_link_survives_fill(env: jinja2.Environment, links: Links) -> None:
    unsubscribe = links.unsubscribe(42, 3)
    values = {**VALUES, "unsubscribe_url": unsubscribe, "email": "o'brien+x@example.org"}
    variant = render_digest(env, make_content())
    tags = _Tags(filled_html(variant, values))
    href = tags.href("Unsubscribe")
    assert href == unsubscribe
    token = href.rsplit("/", 1)[1]
    claims = links.signer.read(Purpose.UNSUBSCRIBE, token)
    assert (claims.subscriber_id, claims.token_version) == (42, 3)
    assert "You receive this because o'brien+x@example.org subscribed." in _text_of(
        filled_html(variant, values)
    )


def test_forged_marker_in_a_title_does_not_become_a_slot(env: jinja2.Environment) -> None:
    forged = "@@pm." + "ab" * 16 + ".unsubscribe_url@@"
    variant = render_digest(env, make_content(make_card(title=f"Free {forged} prize")))
    assert variant.html is not None
    expected = ("more_1", "less_1", *FOOTER_SLOTS)
    assert variant.html[1::2] == expected and variant.text[1::2] == expected
    assert forged in filled_html(variant) and forged in fill(variant.text, VALUES)
    assert variant.subject == f"Trending papers, 26 Nov: Free {forged} prize"


def test_a_colliding_marker_is_refused_rather_than_sent(
    env: jinja2.Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defence in depth: even a guessed nonce cannot add a slot; the count check catches it.
    monkeypatch.setattr(rendering.secrets, "token_hex", lambda n: "0" * 2 * n)
    forged = "@@pm." + "0" * 32 + ".unsubscribe_url@@"
    with pytest.raises(RenderError):
        render_digest(env, make_content(make_card(title=forged)))


def test_fill_refuses_a_missing_value() -> None:
    with pytest.raises(KeyError):
        fill(("a", "email", "b"), {"preferences_url": "x"})


# -- size, text layout, subject --------------------------------------------------------


def test_ten_paper_digest_stays_far_below_gmail_clipping(env: jinja2.Environment) -> None:
    cards = tuple(
        make_card(
            i,
            title=f"{'A very long title about diffusion ' * 6}{i}",
            reason="Matches your topic “diffusion”",
        )
        for i in range(10)
    )
    variant = render_digest(env, make_content(*cards))
    # Feedback tokens as long as real ones (a 6-digit subscriber id).
    token = "123456.2611.00001.more.aww08g.WMIO_954sgK6L9kVw9Bhybx2lq0"
    values = {k: token if k.startswith(("more_", "less_")) else v for k, v in VALUES.items()}
    size = len(filled_html(variant, values).encode()) + len(fill(variant.text, values).encode())
    assert size < 102_000  # Gmail clips above ~102 KB and hides the unsubscribe link
    # Our own budget: today ~54 KB, of which the 20 feedback links are ~9 KB; growth here
    # is a regression.
    assert size < 60_000


def test_text_part_wraps_at_72_columns(env: jinja2.Environment) -> None:
    cards = tuple(make_card(i, title="A very long title about diffusion " * 4) for i in range(10))
    text = fill(render_digest(env, make_content(*cards)).text, VALUES)
    long_lines = [ln for ln in text.splitlines() if len(ln) > 72 and "https://" not in ln]
    assert long_lines == []
    assert "10. A very long title" in text
    assert text.endswith(f"View in browser: {WEB_URL}\n")


def test_subject_is_one_bounded_line(env: jinja2.Environment) -> None:
    card = make_card(title="Line one\r\nBcc: victim@example.org\n" + "word " * 300)
    subject = render_digest(env, make_content(card)).subject
    assert "\r" not in subject and "\n" not in subject
    assert len(subject) <= 200
    assert subject.startswith("Trending papers, 26 Nov: Line one Bcc: victim@example.org word")
    assert subject.endswith("…")


# -- PaperCard rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "line"),
    [
        ([], ""),
        (["Ada Lovelace"], "Ada Lovelace"),
        (["A", "B", "C"], "A, B, C"),
        (["A", "B", "C", "D"], "A, B, C et al."),
        (["A", " ", "B"], "A, B"),
    ],
)
def test_authors_line(names: list[str], line: str) -> None:
    assert authors_line(names) == line
    assert make_card(authors=names).authors_line == line


def test_summary_prefers_ai_summary() -> None:
    assert make_card(ai_summary="A one-line TL;DR.").summary == "A one-line TL;DR."
    assert make_card(ai_summary="   ").summary.startswith("Diffusion models learn")


def test_abstract_is_shortened_at_a_word_boundary() -> None:
    summary = make_card().summary
    original = " ".join(LONG_ABSTRACT.split())
    assert 250 <= len(summary) <= 300
    assert summary.endswith("…")
    head = summary[:-1]
    assert original.startswith(head)
    assert original[len(head)] in " ,."  # cut between words, never inside one


def test_short_abstract_is_kept_whole_with_whitespace_collapsed() -> None:
    card = make_card(summary="Short\n  abstract.", title="Two\n  lines")
    assert (card.summary, card.title) == ("Short abstract.", "Two lines")


def test_card_without_optional_fields(env: jinja2.Environment) -> None:
    card = make_card(
        authors=[],
        organization=None,
        github_repo=None,
        github_stars=None,
        project_page=None,
        num_comments=0,
        upvotes=1,
    )
    text = fill(render_digest(env, make_content(card)).text, VALUES)
    assert "    Trending on Hugging Face · ▲ 1 upvote\n" in text
    assert "comment" not in text and "Code" not in text


@pytest.mark.parametrize(
    ("number", "shown"), [(0, "0"), (999, "999"), (1000, "1k"), (1234, "1.2k"), (1_500_000, "1.5M")]
)
def test_compact_counts(number: int, shown: str) -> None:
    assert compact(number) == shown


# -- the edition cache ----------------------------------------------------------------


def test_edition_store_roundtrip_with_ttl(
    env: jinja2.Environment, redis: fakeredis.FakeRedis
) -> None:
    store = EditionStore(redis, ttl_seconds=3600)
    edition = render_edition(env, make_content(make_card(title="Ünïcode “quotes” ▲")))
    assert store.get("k1") is None
    store.put("k1", edition)
    assert store.get("k1") == edition
    assert 3590 < redis.ttl("papermail:edition:k1") <= 3600


def test_text_only_edition_roundtrips_through_json(env: jinja2.Environment) -> None:
    edition = render_edition(env, make_content(make_card(1), make_card(2), fmt="text"))
    assert RenderedEdition.from_json(edition.to_json().encode()) == edition


def _cached(**changes: object) -> str:
    data: dict[str, object] = {
        "weekly": False,
        "papers": [],
        "subjects": [],
        "empty_subject": "s",
        "titles": [],
        "feedback": [],
        "text": {"head": ["h"], "cards": [], "foot": ["f"]},
        "html": None,
    }
    data.update(changes)
    return json.dumps(data)


def test_cached_subject_cannot_carry_a_header_break() -> None:
    raw = _cached(empty_subject="Hi\r\nBcc: x@example.org")
    assert RenderedEdition.from_json(raw).empty_subject == "Hi Bcc: x@example.org"


def test_unreadable_cache_entry_is_a_miss(redis: fakeredis.FakeRedis) -> None:
    store = EditionStore(redis, ttl_seconds=60, prefix="t:")
    redis.set("t:bad", "{not json")
    redis.set("t:slot", _cached(text={"head": ["a", "password", "b"], "cards": [], "foot": ["f"]}))
    # A card slot in the foot: only the footer's per-message slots may sit there.
    redis.set("t:foot", _cached(text={"head": ["h"], "cards": [], "foot": ["a", "why", "b"]}))
    redis.set("t:short", _cached(papers=["2611.00001"]))  # a paper without its card
    for key in ("bad", "slot", "foot", "short"):
        assert store.get(key) is None, key


# -- one render, many readers -------------------------------------------------------------


def test_a_readers_digest_is_their_cards_in_their_order_with_their_reasons(
    env: jinja2.Environment,
) -> None:
    edition = render_edition(env, make_content(*(make_card(i) for i in range(1, 6))))
    variant = edition.variant([("2611.00004", "Because four"), ("2611.00002", "Because two")])
    text = fill(variant.text, VALUES)
    first, second = text.index("part 4"), text.index("part 2")
    assert first < second and "part 1" not in text and "part 5" not in text
    assert "1. Scaling Diffusion Transformers, part 4" in text
    assert "2. Scaling Diffusion Transformers, part 2" in text
    assert "Why: Because four" in text and "Why: Because two" in text
    page = filled_html(variant)
    body = page[page.index("</div>", page.index("<body")) :]  # after the preview line
    assert body.index("#1") < body.index("part 4") < body.index("#2") < body.index("part 2")
    assert variant.subject == "Trending papers, 26 Nov: Scaling Diffusion Transformers, part 4"
    assert variant.papers == ("2611.00004", "2611.00002")
    assert "2 papers from today's new research, picked for you." in text


def test_the_same_edition_serves_a_reader_with_no_papers(env: jinja2.Environment) -> None:
    edition = render_edition(env, make_content(make_card(1)))
    variant = edition.variant([])
    assert variant.text[1::2] == FOOTER_SLOTS
    assert "Nothing new matched your preferences today" in fill(variant.text, VALUES)


def test_a_pick_outside_the_edition_is_refused(env: jinja2.Environment) -> None:
    edition = render_edition(env, make_content(make_card(1)))
    with pytest.raises(KeyError):
        edition.variant([("2611.09999", "not rendered")])


# -- feedback links ---------------------------------------------------------------------


def test_every_card_gets_its_own_feedback_slots(env: jinja2.Environment) -> None:
    cards = tuple(make_card(i) for i in range(1, 4))
    variant = render_digest(env, make_content(*cards))
    expected = ("more_1", "less_1", "more_2", "less_2", "more_3", "less_3", *FOOTER_SLOTS)
    assert variant.text[1::2] == expected
    assert variant.html is not None and variant.html[1::2] == expected
    assert variant.papers == ("2611.00001", "2611.00002", "2611.00003")
    assert variant.feedback_slots() == list(expected[:6])
    assert feedback_payloads(variant.feedback_papers())[2:4] == (
        b".2611.00002.more",
        b".2611.00002.less",
    )
    tags = _Tags(filled_html(variant))
    labels = [label for _href, label in tags.anchors if label.endswith("like this")]
    assert labels == ["More like this", "Less like this"] * 3
    assert tags.href("More like this") == FEEDBACK_URL + VALUES["more_1"]
    text = fill(variant.text, VALUES)
    assert f"    More like this: {FEEDBACK_URL}tok-more_2\n" in text
    assert f"    Less like this: {FEEDBACK_URL}tok-less_3\n" in text


def test_no_feedback_url_no_feedback_links(env: jinja2.Environment) -> None:
    content = make_content(make_card(1), make_card(2))
    variant = render_digest(env, dataclasses.replace(content, feedback_url=""))
    assert variant.text[1::2] == FOOTER_SLOTS
    assert variant.feedback_slots() == [] and variant.feedback_papers() == []
    assert "like this" not in fill(variant.text, VALUES)


def test_a_card_no_token_can_name_gets_no_feedback_links(env: jinja2.Environment) -> None:
    odd = make_card(2, id="not_an_arxiv_id")
    variant = render_digest(env, make_content(make_card(1), odd, make_card(3)))
    # Slots are named by position in the reader's digest: the third card's are "_3".
    assert variant.text[1::2] == ("more_1", "less_1", "more_3", "less_3", *FOOTER_SLOTS)
    assert variant.feedback_slots() == ["more_1", "less_1", "more_3", "less_3"]
    assert feedback_payloads(variant.feedback_papers())[2] == b".2611.00003.more"


def test_real_feedback_tokens_fill_the_links(env: jinja2.Environment, links: Links) -> None:
    content = dataclasses.replace(
        make_content(make_card(1), make_card(2)), feedback_url=links.feedback_prefix
    )
    variant = render_digest(env, content)
    payloads = feedback_payloads(variant.feedback_papers())
    tokens = links.signer.feedback_tokens(42, payload_suffixes=payloads)
    values = {**VALUES, **dict(zip(variant.feedback_slots(), tokens, strict=True))}
    tags = _Tags(filled_html(variant, values))
    more = [href for href, label in tags.anchors if label == "More like this"]
    assert [
        links.signer.read_feedback(h.removeprefix(links.feedback_prefix)).paper_id for h in more
    ] == [
        "2611.00001",
        "2611.00002",
    ]
