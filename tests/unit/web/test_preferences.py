"""The preferences page: current settings, validation, what changed, token rules."""

from __future__ import annotations

import html

import pytest

from papermail.db import session_scope
from papermail.models import Subscriber, SubscriberStatus
from papermail.pipeline.planning import reader_selection
from papermail.sources.arxiv_taxonomy import CATEGORIES
from papermail.stages import InlineDispatcher, plan
from papermail.subscribers.preferences import MESSAGES, TOO_MANY_CATEGORIES
from papermail.subscribers.tokens import Purpose
from tests.support.web import (
    HOSTILE,
    Web,
    confirm_path,
    csrf_in,
    seed_edition,
    text_of,
)

GOOD: dict[str, str | list[str]] = {
    "frequency": "weekly",
    "max_papers": "5",
    "topics": "robotics, diffusion",
    "follow_organizations": "Example Lab",
    "follow_authors": "Ada Lovelace",
    "format": "text",
    "timezone": "Europe/Paris",
    "send_hour": "8",
    "relevance_weight": "mostly-for-me",
    "arxiv_categories": ["cs.RO", "cs.LG"],  # ticked boxes: one field each
}


def _page(web: Web, subscriber: Subscriber) -> tuple[str, str]:
    path = f"/preferences/{web.token(Purpose.PREFERENCES, subscriber)}"
    return path, web.client.get(path).text


def test_page_shows_current_settings(web: Web) -> None:
    ada = web.add(
        "ada@example.org",
        topics=["diffusion", "video"],
        max_papers=7,
        timezone="America/New_York",
        send_hour=9,
        follow_authors=["Alan Turing"],
        relevance_weight=0.25,
        arxiv_categories=["eess.IV", "cs.RO"],
    )
    response = web.client.get(f"/preferences/{web.token(Purpose.PREFERENCES, ada)}")
    assert response.status_code == 200
    page = response.text
    assert "ada@example.org" in page
    assert 'value="diffusion, video"' in page
    assert 'id="max_papers" name="max_papers" value="7"' in page
    assert 'value="America/New_York"' in page
    assert '<option value="9" selected>09:00</option>' in page
    assert 'value="Alan Turing"' in page
    assert 'id="frequency-daily" name="frequency" value="daily" checked' in page
    assert 'id="format-html" name="format" value="html" checked' in page
    # Trending vs. for me: five labelled steps, the reader's checked.
    for value, label in [
        ("trending", "Trending"),
        ("mostly-trending", "Mostly trending"),
        ("balanced", "Balanced"),
        ("mostly-for-me", "Mostly for me"),
        ("for-me", "For me"),
    ]:
        radio = f'id="relevance_weight-{value}" name="relevance_weight" value="{value}"'
        assert radio in page
        assert f'<label for="relevance_weight-{value}">{label}</label>' in page
    assert page.count('name="relevance_weight"') == 5
    assert 'name="relevance_weight" value="mostly-trending" checked' in page
    assert page.count('name="relevance_weight" value="mostly-trending" checked') == 1
    # arXiv categories: every one offered by its human name, the reader's ticked.
    assert page.count('type="checkbox" id="arxiv_categories-') == len(CATEGORIES)
    assert 'name="arxiv_categories" value="cs.RO" checked>' in page
    assert 'name="arxiv_categories" value="eess.IV" checked>' in page
    assert page.count('name="arxiv_categories" value=') == len(CATEGORIES)
    assert page.count('checked><label for="arxiv_categories-') == 2
    # Closed groups; those holding a choice name it in their summary.
    assert page.count('<details class="archive">') == 5
    shown = _plain(html.unescape(page))
    assert "Computer Science · 1 chosen: cs.RO" in shown
    assert "Electrical Engineering and Systems Science · 1 chosen: eess.IV" in shown
    assert "cs.RO — Robotics" in _plain(html.unescape(page))
    assert "<script" not in page  # the picker needs none
    assert '<option value="Europe/Paris">' in page  # the time zone suggestions
    assert 'href="https://papers.example.org/unsubscribe/' in page
    for label in (
        "frequency",
        "send_hour",
        "timezone",
        "format",
        "max_papers",
        "topics",
        "follow_organizations",
        "follow_authors",
        "relevance_weight",
        "arxiv_categories",
    ):
        assert f'id="{label}"' in page  # every control has an id its label/legend names


def test_saving_shows_what_changed_and_stores_it(web: Web) -> None:
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    response = web.client.post(path, data=GOOD | {"csrf_token": csrf_in(page)})
    assert response.status_code == 200
    shown = html.unescape(response.text)
    assert "Saved. Your next digest uses these settings." in shown
    for line in (
        "Frequency: was daily → now weekly",
        "Papers per email: was 10 → now 5",
        "Topics: was none → now robotics, diffusion",
        "Format: was HTML → now plain text",
        "Time zone: was UTC → now Europe/Paris",
        "Send hour: was 07:00 → now 08:00",
        "Organisations: was none → now Example Lab",
        "Authors: was none → now Ada Lovelace",
        "arXiv categories: was none → now cs.LG, cs.RO",
        "Trending vs. for me: was Balanced → now Mostly for me",
    ):
        assert line in _plain(shown)
    saved = web.subscriber("ada@example.org")
    assert saved is not None
    assert (
        saved.frequency.value,
        saved.max_papers,
        saved.topics,
        saved.format.value,
        saved.timezone,
        saved.send_hour,
        saved.follow_organizations,
        saved.follow_authors,
    ) == (
        "weekly",
        5,
        ["robotics", "diffusion"],
        "text",
        "Europe/Paris",
        8,
        ["Example Lab"],
        ["Ada Lovelace"],
    )
    assert (saved.relevance_weight, saved.arxiv_categories) == (0.75, ["cs.LG", "cs.RO"])
    # And the page shows the new choices.
    assert 'name="relevance_weight" value="mostly-for-me" checked' in response.text
    assert 'name="arxiv_categories" value="cs.LG" checked>' in response.text


def _plain(markup: str) -> str:
    import re

    return " ".join(re.sub(r"<[^>]+>", "", markup).split())


def test_saving_unchanged_settings_says_so(web: Web) -> None:
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    data = {
        "frequency": "daily",
        "max_papers": "10",
        "topics": "",
        "follow_organizations": "",
        "follow_authors": "",
        "format": "html",
        "timezone": "UTC",
        "send_hour": "7",
        "relevance_weight": "balanced",
    }
    response = web.client.post(path, data=data | {"csrf_token": csrf_in(page)})
    assert "Saved. Nothing changed." in response.text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_papers", "0", "from 1 to 30"),
        ("max_papers", "31", "from 1 to 30"),
        ("max_papers", "five", "from 1 to 30"),
        ("max_papers", "", "from 1 to 30"),
        ("max_papers", "٣", "from 1 to 30"),  # a digit, but not an ASCII one
        ("send_hour", "24", "from 0 to 23"),
        ("send_hour", "-1", "from 0 to 23"),
        ("timezone", "Mars/Olympus_Mons", "Unknown time zone"),
        ("timezone", "", "Unknown time zone"),
        ("timezone", "Europe/Paris\r\nX: y", "Line breaks"),
        ("frequency", "hourly", "Choose daily or weekly."),
        ("format", "pdf", "Choose HTML or plain text."),
        ("topics", ", ".join(f"t{n}" for n in range(21)), "at most 20 topics"),
        ("topics", "z" * 81, "under 80 characters"),
        ("topics", "a\r\nb", "Line breaks"),
        ("follow_organizations", "o" * 81, "under 80 characters"),
        ("follow_authors", ", ".join(f"a{n}" for n in range(21)), "at most 20 authors"),
        ("follow_authors", "Ada\nLovelace", "Line breaks"),
        ("follow_authors", "x" * 1001, "under 1000 characters"),
        ("topics", "bell\x07", "characters that aren't allowed"),
        ("relevance_weight", "0.3", MESSAGES["relevance_weight"]),
        ("relevance_weight", "", MESSAGES["relevance_weight"]),  # no step chosen
        ("relevance_weight", "Balanced", MESSAGES["relevance_weight"]),
        ("arxiv_categories", ["cs.RO", "cs.Robots"], "Unknown arXiv category (cs.Robots)"),
        ("arxiv_categories", "cs.RO\r\ncs.LG", "Line breaks"),
    ],
)
def test_each_bad_field_is_refused_next_to_it_keeping_the_rest(
    web: Web, field: str, value: str | list[str], message: str
) -> None:
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    response = web.client.post(path, data=GOOD | {field: value, "csrf_token": csrf_in(page)})
    assert response.status_code == 400
    page = response.text
    assert f'<p class="error" id="{field}-error">' in page
    assert message in html.unescape(page)
    assert f'href="#{field}"' in page  # the summary links to the field
    assert page.count('aria-invalid="true"') == 1
    # Everything else the person typed is still there.
    assert 'value="robotics, diffusion"' in page or field == "topics"
    assert 'value="Ada Lovelace"' in page or field == "follow_authors"
    assert 'id="frequency-weekly" name="frequency" value="weekly" checked' in page or (
        field == "frequency"
    )
    # Nothing was saved.
    saved = web.subscriber("ada@example.org")
    assert saved is not None and saved.frequency.value == "daily" and saved.topics == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_papers", "99"),
        ("send_hour", "25"),
        ("timezone", "Mars/Olympus"),
        ("max_papers", "+5"),
        ("max_papers", "5.0"),
        ("send_hour", "1_0"),
    ],
)
def test_the_page_shows_what_preferences_says(web: Web, field: str, value: str) -> None:
    # The form only turns text into values; the sentence is Preferences' own (the CLI's too).
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    response = web.client.post(path, data=GOOD | {field: value, "csrf_token": csrf_in(page)})
    assert response.status_code == 400
    assert f'id="{field}-error">' in response.text
    assert MESSAGES[field] in html.unescape(response.text)


def test_bad_hour_is_kept_in_the_select(web: Web) -> None:
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    page = web.client.post(path, data=GOOD | {"send_hour": "25", "csrf_token": csrf_in(page)}).text
    assert '<option value="25" selected>25</option>' in page


def test_post_without_a_valid_csrf_token_saves_nothing(web: Web) -> None:
    ada = web.add("ada@example.org")
    grace = web.add("grace@example.org")
    path, _ = _page(web, ada)
    _, grace_page = _page(web, grace)
    for token in (None, "", "nonsense", csrf_in(grace_page)):  # grace's is bound to her link
        data = GOOD | ({} if token is None else {"csrf_token": token})
        response = web.client.post(path, data=data)
        assert response.status_code == 403
        assert "nothing was saved" in response.text
        assert 'value="robotics, diffusion"' in response.text  # kept
    assert web.subscriber("ada@example.org").frequency.value == "daily"  # type: ignore[union-attr]


def test_the_form_needs_no_cookie(web: Web) -> None:
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    web.client.cookies.clear()
    assert web.client.post(path, data=GOOD | {"csrf_token": csrf_in(page)}).status_code == 200


@pytest.mark.parametrize("purpose", [Purpose.CONFIRM, Purpose.UNSUBSCRIBE])
def test_other_purposes_cannot_open_preferences(web: Web, purpose: Purpose) -> None:
    ada = web.add("ada@example.org")
    response = web.client.get(f"/preferences/{web.token(purpose, ada)}")
    assert response.status_code == 400
    assert "ada@example.org" not in response.text


def test_a_token_names_one_subscriber_and_cannot_be_edited_to_another(web: Web) -> None:
    ada = web.add("ada@example.org")
    grace = web.add("grace@example.org")
    adas_signature = web.token(Purpose.PREFERENCES, ada).rsplit(".", 1)[1]
    graces_claims = web.token(Purpose.PREFERENCES, grace).rsplit(".", 1)[0]
    response = web.client.get(f"/preferences/{graces_claims}.{adas_signature}")
    assert response.status_code == 400
    assert "grace@example.org" not in response.text
    # And ada's own link only ever changes ada.
    path, page = _page(web, ada)
    web.client.post(path, data=GOOD | {"csrf_token": csrf_in(page)})
    assert web.subscriber("grace@example.org").frequency.value == "daily"  # type: ignore[union-attr]


def test_rotating_the_token_version_revokes_preferences_links(web: Web) -> None:
    ada = web.add("ada@example.org")
    old = web.token(Purpose.PREFERENCES, ada, version=1)
    with session_scope(web.runtime.sessions) as session:
        session.query(Subscriber).update({"token_version": 2})
    response = web.client.get(f"/preferences/{old}")
    assert response.status_code == 400
    assert "replaced" in response.text
    assert (
        web.client.get(f"/preferences/{web.token(Purpose.PREFERENCES, ada, 2)}").status_code == 200
    )


def test_unsubscribed_reader_is_told_settings_are_unused(web: Web) -> None:
    ada = web.add("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        session.query(Subscriber).update({"status": SubscriberStatus.UNSUBSCRIBED})
    _, page = _page(web, ada)
    assert "You're unsubscribed" in html.unescape(page)


def test_tampered_or_unknown_preferences_link_gets_400(web: Web) -> None:
    web.add("ada@example.org")
    gone = web.token(Purpose.PREFERENCES, 999)
    for token in ("x", gone, gone + "x"):
        response = web.client.get(f"/preferences/{token}")
        assert response.status_code == 400
        assert "<h1>" in response.text


def test_the_next_digest_selection_follows_saved_preferences(web: Web) -> None:
    seed_edition(web, papers=9)
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    web.client.post(
        path,
        data=GOOD
        | {
            "topics": "robotics",
            "max_papers": "3",
            "follow_organizations": "",
            "follow_authors": "",
            "csrf_token": csrf_in(page),
        },
    )
    saved = web.subscriber("ada@example.org")
    assert saved is not None
    with web.runtime.sessions() as session:
        from papermail.models import Edition

        edition = session.query(Edition).one()
        selection = reader_selection(session, edition=edition, subscriber_id=saved.id)
    assert len(selection) == 3
    assert any("your topic \u201crobotics\u201d" in reason for _, reason in selection)


def test_leaving_revokes_preferences_links(web: Web) -> None:
    ada = web.add("ada@example.org")
    path, _ = _page(web, ada)
    assert web.client.get(path).status_code == 200
    web.client.post(
        f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, ada)}",
        data={"List-Unsubscribe": "One-Click"},
    )
    response = web.client.get(path)
    assert response.status_code == 400 and "replaced" in response.text
    assert web.client.post(path, data=GOOD).status_code == 400  # and cannot save either
    assert web.subscriber("ada@example.org").frequency.value == "daily"  # type: ignore[union-attr]


def test_digests_link_to_preferences_with_the_current_token_version(web: Web) -> None:
    # The version is read when a batch loads its rows, so a digest sent after confirming
    # (or coming back) carries a link that works, and one from before does not.
    edition_id = seed_edition(web)
    web.subscribe("ada@example.org")
    web.confirm(confirm_path(web.outbox[0]))
    plan(
        web.runtime,
        dispatcher=InlineDispatcher(web.runtime, clock=web.clock),
        now=web.clock(),
        due_only=False,
        edition_ids=[edition_id],
    )
    digest = web.outbox[-1]
    assert digest["List-Unsubscribe"]
    [link] = [w for w in text_of(digest).split() if "/preferences/" in w]
    token = link.rsplit("/", 1)[1]
    assert web.runtime.links.signer.read(Purpose.PREFERENCES, token).token_version == 2
    assert web.client.get(f"/preferences/{token}").status_code == 200


# --- trending vs. for me, arXiv categories --------------------------------------------------


def test_ticking_too_many_categories_gets_the_limit_not_a_broken_form(web: Web) -> None:
    ada = web.add("ada@example.org", arxiv_categories=["cs.RO"])
    path, page = _page(web, ada)
    every = list(CATEGORIES)  # every box on the page: more fields than any other form
    response = web.client.post(
        path, data=GOOD | {"arxiv_categories": every, "csrf_token": csrf_in(page)}
    )
    assert response.status_code == 400
    assert '<p class="error" id="arxiv_categories-error">' in response.text
    assert TOO_MANY_CATEGORIES in html.unescape(response.text)
    # What was ticked stays ticked, and nothing was saved.
    assert response.text.count('name="arxiv_categories" value=') == len(CATEGORIES)
    assert response.text.count('checked><label for="arxiv_categories-') == len(CATEGORIES)
    assert web.subscriber("ada@example.org").arxiv_categories == ["cs.RO"]  # type: ignore[union-attr]


def test_a_posted_code_is_escaped_in_the_error_and_never_offered(web: Web) -> None:
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    response = web.client.post(
        path, data=GOOD | {"arxiv_categories": [HOSTILE, "cs.RO"], "csrf_token": csrf_in(page)}
    )
    assert response.status_code == 400
    assert "<script>" not in response.text and "<img" not in response.text
    assert "Unknown arXiv categories (&#34;&gt;&lt;img, src=x, onerror=alert(1)&gt;&lt;scrip…)" in (
        response.text
    )
    assert response.text.count('name="arxiv_categories" value=') == len(CATEGORIES)
    assert 'name="arxiv_categories" value="cs.RO" checked>' in response.text


def test_clearing_every_category_saves_none(web: Web) -> None:
    # No box ticked posts no field at all: that is an empty choice, not a missing one.
    ada = web.add("ada@example.org", arxiv_categories=["cs.RO", "stat.ML"])
    path, page = _page(web, ada)
    data = {k: v for k, v in GOOD.items() if k != "arxiv_categories"}
    response = web.client.post(path, data=data | {"csrf_token": csrf_in(page)})
    assert response.status_code == 200
    assert "arXiv categories: was cs.RO, stat.ML → now none" in _plain(html.unescape(response.text))
    assert web.subscriber("ada@example.org").arxiv_categories == []  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "weight"),
    [
        ("trending", 0.0),
        ("mostly-trending", 0.25),
        ("balanced", 0.5),
        ("mostly-for-me", 0.75),
        ("for-me", 1.0),
    ],
)
def test_each_blend_step_saves_its_weight(web: Web, value: str, weight: float) -> None:
    ada = web.add("ada@example.org")
    path, page = _page(web, ada)
    response = web.client.post(
        path, data=GOOD | {"relevance_weight": value, "csrf_token": csrf_in(page)}
    )
    assert response.status_code == 200
    assert web.subscriber("ada@example.org").relevance_weight == weight  # type: ignore[union-attr]
    assert f'name="relevance_weight" value="{value}" checked' in response.text


def test_a_weight_set_by_hand_opens_at_the_nearest_step_and_saving_says_so(web: Web) -> None:
    ada = web.add("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        session.query(Subscriber).update({"relevance_weight": 0.3})
    path, page = _page(web, ada)
    assert 'name="relevance_weight" value="mostly-trending" checked' in page
    response = web.client.post(
        path, data=GOOD | {"relevance_weight": "mostly-trending", "csrf_token": csrf_in(page)}
    )
    assert "Trending vs. for me: was 0.3 → now Mostly trending" in _plain(
        html.unescape(response.text)
    )
