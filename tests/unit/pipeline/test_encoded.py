"""Per-reader assembly from an edition's pre-encoded pieces: the same email as a direct render.

The oracle is the string path: ``RenderedEdition.variant(picks)`` filled with ``fill``
(what previews show). Each reader's message, joined from encoded pieces, must decode to
exactly that, for any selection, order, format and hostile text.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import random
from email.message import EmailMessage

import jinja2
import pytest

from papermail.config import Settings
from papermail.pipeline.encoded import EncodedEdition, NotInEdition
from papermail.pipeline.encoding import DateHeaders, Layout
from papermail.pipeline.pieces import RenderedEdition
from papermail.pipeline.rendering import fill, make_environment, render_edition
from tests.unit.pipeline.test_rendering import HOSTILE, make_card, make_content

DATE = dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.UTC)
TO = "reader@example.org"
UNSUBSCRIBE = "https://papers.example.org/unsubscribe/tok-u?x=1&y=2"


@pytest.fixture
def env(settings: Settings) -> jinja2.Environment:
    return make_environment(settings.templates_dir)


@pytest.fixture
def edition(env: jinja2.Environment) -> RenderedEdition:
    cards = [make_card(i) for i in range(1, 9)]
    cards[3] = make_card(4, title=f"Ünïcode “quotes” and {HOSTILE}")
    cards[5] = make_card(6, id="not_an_arxiv_id")  # no token can name it: no feedback links
    return render_edition(env, make_content(*cards))


def layout(multipart: bool = True) -> Layout:
    return Layout.make(
        sender="papermail <digest@papers.example.org>",
        list_id="papermail <daily.papers.example.org>",
        archive_url="https://papers.example.org/editions",
        multipart=multipart,
    )


def values_for(slots: list[str]) -> dict[str, str]:
    values = {
        "email": TO,
        "preferences_url": "https://papers.example.org/preferences/tok-p",
        "unsubscribe_url": UNSUBSCRIBE,
    }
    values.update({name: f"tok.{name}.signed" for name in slots})
    return values


def sent(encoded: EncodedEdition, picks: list[tuple[str, str]]) -> EmailMessage:
    template = encoded.template(picks)
    values = values_for(list(template.feedback_slots))
    raw = template.render(
        to=TO,
        message_id="<m1@papers.example.org>",
        date=DATE,
        dates=DateHeaders(),
        unsubscribe_url=UNSUBSCRIBE,
        values=values,
    )
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert not any(line.startswith(b".") for line in raw.split(b"\r\n"))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def expected(edition: RenderedEdition, picks: list[tuple[str, str]]) -> tuple[str, str | None]:
    variant = edition.variant(picks)
    values = values_for(variant.feedback_slots())
    text = fill(variant.text, values)
    page = None
    if variant.html is not None:
        page = fill(variant.html, {k: html.escape(v, quote=True) for k, v in values.items()})
    return text, page


def body(message: EmailMessage, kind: str) -> str | None:
    part = message.get_body((kind,))
    # Quoted-printable carries line breaks as CRLF; the rendered text has "\n".
    return None if part is None else str(part.get_content()).replace("\r\n", "\n")


@pytest.mark.parametrize("seed", range(6))
def test_any_selection_decodes_to_exactly_what_a_direct_render_shows(
    edition: RenderedEdition, seed: int
) -> None:
    rng = random.Random(seed)
    papers = rng.sample(edition.papers, rng.randint(0, len(edition.papers)))
    picks = [
        (pid, rng.choice(["#1 trending", f"Similar to “{HOSTILE}”, which you liked"]))
        for pid in papers
    ]
    message = sent(EncodedEdition(edition, layout()), picks)
    text, page = expected(edition, picks)
    assert body(message, "plain") == text
    assert body(message, "html") == page
    assert message["Subject"] == edition.variant(picks).subject


def test_text_readers_get_a_single_text_part(edition: RenderedEdition) -> None:
    from dataclasses import replace

    text_only = replace(edition, html=None)
    picks = [(edition.papers[2], "why"), (edition.papers[0], "because")]
    message = sent(EncodedEdition(text_only, layout(multipart=False)), picks)
    assert not message.is_multipart()
    assert body(message, "plain") == expected(text_only, picks)[0]


def test_feedback_tokens_are_signed_per_card_position(edition: RenderedEdition) -> None:
    encoded = EncodedEdition(edition, layout())
    odd = edition.papers[5]  # "not_an_arxiv_id": no feedback links
    template = encoded.template([(edition.papers[4], "a"), (odd, "b"), (edition.papers[1], "c")])
    assert template.feedback_slots == ("more_1", "less_1", "more_3", "less_3")
    assert template.feedback_payloads == (
        f".{edition.papers[4]}.more".encode(),
        f".{edition.papers[4]}.less".encode(),
        f".{edition.papers[1]}.more".encode(),
        f".{edition.papers[1]}.less".encode(),
    )


def test_a_pick_the_edition_has_no_card_for_is_refused(edition: RenderedEdition) -> None:
    with pytest.raises(NotInEdition, match="2611.99999"):
        EncodedEdition(edition, layout()).template([("2611.99999", "why")])


def test_a_why_line_cannot_break_out_of_its_card(edition: RenderedEdition) -> None:
    picks = [(edition.papers[0], f"Similar to “{HOSTILE}”\r\nBcc: x@example.org")]
    message = sent(EncodedEdition(edition, layout()), picks)
    page = body(message, "html") or ""
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert message["Bcc"] is None


def test_what_a_process_remembers_is_what_readers_share_not_their_previews(
    edition: RenderedEdition,
) -> None:
    """Every reader's own first three titles (the inbox preview) are encoded for their
    message and forgotten; why-lines and the intro, which readers share, are kept."""
    encoded = EncodedEdition(edition, layout())
    rng = random.Random(3)
    orders = set()
    for _ in range(40):
        papers = rng.sample(edition.papers, 5)
        orders.add(tuple(papers[:3]))
        sent(encoded, [(pid, "#1 trending") for pid in papers])
    assert len(orders) > 30  # nearly every reader's preview is their own
    remembered = {text for text, _html in encoded._values}
    assert "#1 trending" in remembered
    assert len(remembered) <= 2  # the why-line and the one intro ("5 papers ...")
