"""Feedback from a digest card: "More like this" / "Less like this", muting, and taking
it back from the preferences page.

GET (and HEAD) on a feedback link change nothing; one POST to the same URL records;
the link acts only for the reader, paper and direction it was signed for.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest
from itsdangerous import TimestampSigner
from markupsafe import escape
from sqlalchemy import select

from papermail import stages
from papermail.db import session_scope
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionItem,
    EditionKind,
    Feedback,
    FeedbackDirection,
    Paper,
    Subscriber,
    SubscriberStatus,
)
from papermail.stages import InlineDispatcher
from papermail.subscribers import feedback
from papermail.subscribers.subscriptions import revoke_links, unsubscribe
from papermail.subscribers.tokens import Purpose
from papermail.web.app import redact
from tests.support.web import HOSTILE, Web, csrf_in, seed_edition, text_of

DAY = dt.date(2026, 11, 26)
MORE, LESS = FeedbackDirection.MORE, FeedbackDirection.LESS
_FEEDBACK_URL = re.compile(r"https://papers\.example\.org/feedback/[A-Za-z0-9_.\-]+")


def path_for(web: Web, subscriber: Subscriber | int, paper_id: str, direction: str) -> str:
    sid = subscriber if isinstance(subscriber, int) else subscriber.id
    url = web.runtime.links.feedback(sid, paper_id, direction)
    return url.removeprefix(web.runtime.links.base_url)


def marks(web: Web, subscriber: Subscriber) -> dict[str, FeedbackDirection]:
    with web.runtime.sessions() as session:
        rows = session.execute(
            select(Feedback.paper_id, Feedback.direction).where(
                Feedback.subscriber_id == subscriber.id
            )
        )
        return {pid: direction for pid, direction in rows}


def muted(web: Web, subscriber: Subscriber) -> tuple[list[str], list[str]]:
    with web.runtime.sessions() as session:
        row = session.get(Subscriber, subscriber.id)
        assert row is not None
        return list(row.muted_authors), list(row.muted_organizations)


def seed_distinct(web: Web, *, papers: int = 4, day: dt.date = DAY) -> list[str]:
    """An edition whose papers each have their own authors and organisation."""
    with session_scope(web.runtime.sessions) as session:
        ids = []
        for n in range(papers):
            pid = f"2611.1{n:04d}"
            session.add(
                Paper(
                    id=pid,
                    title=f"Distinct paper {n}",
                    summary=f"What paper {n} found. " * 30,
                    authors=[f"Author {n}A", f"Author {n}B"],
                    organization=f"Lab {n}",
                    upvotes=100 - n,
                    submitted_on_daily_at=dt.datetime.combine(day, dt.time(3), tzinfo=dt.UTC),
                )
            )
            ids.append(pid)
        session.flush()
        edition = Edition(day=day, kind=EditionKind.DAILY, created_at=dt.datetime.now(dt.UTC))
        edition.items = [
            EditionItem(paper_id=pid, rank=i + 1, score=1.0 / (i + 1)) for i, pid in enumerate(ids)
        ]
        session.add(edition)
        return ids


def send_digests(web: Web) -> list[EmailMessage]:
    """Plan every daily edition for everyone and send it through the memory backend."""
    before = len(web.backend.outbox)
    with web.runtime.sessions() as session:
        editions = list(session.scalars(select(Edition.id)))
    stages.plan(
        web.runtime,
        dispatcher=InlineDispatcher(web.runtime),
        now=dt.datetime.now(dt.UTC),
        due_only=False,
        edition_ids=editions,
    )
    return web.outbox[before:]


class Anchors(HTMLParser):
    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[str, str]] = []
        self._open: list[list[str]] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open.append([dict(attrs).get("href") or "", ""])

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            href, text = self._open.pop()
            self.anchors.append((href, " ".join(text.split())))


def plain(message: EmailMessage) -> str:
    return text_of(message).replace("\r\n", "\n")


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def shown(markup: str) -> str:
    """A page's visible text, tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", markup)).split())


def claims_of(web: Web, url: str) -> tuple[int, str, FeedbackDirection]:
    token = url.rsplit("/", 1)[1]
    claims = web.runtime.links.signer.read_feedback(token)
    return claims.subscriber_id, claims.paper_id, claims.direction


# --- GET and HEAD change nothing ----------------------------------------------------------


def test_get_shows_the_paper_and_one_button_and_changes_nothing(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    response = web.client.get(path_for(web, ada, "2611.00001", "more"))
    assert response.status_code == 200
    page = response.text
    assert "More like this?" in page
    assert "Paper 1 on robotics" in page
    assert "Ada Lovelace, Alan Turing" in page and "Example Lab" in page
    assert "A study of robotics." in page
    assert page.count('name="do"') == 1
    assert 'value="record"' in page and "Show me more like this" in page
    assert "ada@example.org" not in page  # a forwarded email does not show whose it was
    assert "/preferences/" not in page  # never a way round the versioned links
    assert marks(web, ada) == {}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_head_changes_nothing_either(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, "2611.00001", "less")
    for _ in range(3):
        response = web.client.head(path)
        assert response.status_code == 200
        assert response.content == b""
    assert marks(web, ada) == {}


def test_the_page_works_without_javascript_or_cookies(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, "2611.00002", "less")
    page = web.client.get(path).text
    assert "<script" not in page
    assert f'action="{path}"' in page and 'method="post"' in page
    web.client.cookies.clear()
    response = web.client.post(path, data={"do": "record"})
    assert "set-cookie" not in response.headers
    assert marks(web, ada) == {"2611.00002": LESS}


# --- POST records, idempotently; the opposite replaces ----------------------------------


def test_post_records_and_says_what_changed(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    response = web.client.post(path_for(web, ada, "2611.00001", "more"), data={"do": "record"})
    assert response.status_code == 200
    assert "You'll see more like “Paper 1 on robotics”." in shown(response.text)
    assert marks(web, ada) == {"2611.00001": MORE}
    assert 'value="undo"' in response.text

    fewer = web.client.post(path_for(web, ada, "2611.00002", "less"), data={"do": "record"})
    assert "You'll see fewer like “Paper 2 on reinforcement learning”." in shown(fewer.text)
    assert marks(web, ada) == {"2611.00001": MORE, "2611.00002": LESS}


def test_recording_twice_is_idempotent(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, "2611.00001", "more")
    web.client.post(path, data={"do": "record"})
    again = web.client.post(path, data={"do": "record"})
    assert again.status_code == 200
    assert "said so already" in again.text
    with web.runtime.sessions() as session:
        count = len(session.scalars(select(Feedback)).all())
    assert count == 1


def test_the_opposite_direction_replaces_the_earlier_mark(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    web.client.post(path_for(web, ada, "2611.00001", "more"), data={"do": "record"})
    less = path_for(web, ada, "2611.00001", "less")
    page = web.client.get(less).text
    assert "You've marked this paper more like this; this replaces it" in shown(page)
    web.client.post(less, data={"do": "record"})
    assert marks(web, ada) == {"2611.00001": LESS}


def test_undo_from_the_confirmation(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, "2611.00001", "more")
    web.client.post(path, data={"do": "record"})
    response = web.client.post(path, data={"do": "undo"})
    assert response.status_code == 200 and "Undone" in response.text
    assert marks(web, ada) == {}


@pytest.mark.parametrize("data", [{}, {"do": "nothing"}, {"List-Unsubscribe": "One-Click"}])
def test_a_post_that_asks_for_nothing_changes_nothing(web: Web, data: dict[str, str]) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    response = web.client.post(path_for(web, ada, "2611.00001", "more"), data=data)
    assert response.status_code == 400
    assert marks(web, ada) == {} and muted(web, ada) == ([], [])


def test_an_unsubscribed_reader_can_still_say_so(web: Web) -> None:
    # Their mail is what they judge; it counts if they come back.
    seed_edition(web)
    ada = web.add("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        row = session.get(Subscriber, ada.id)
        assert row is not None
        unsubscribe(session, row, now=dt.datetime.now(dt.UTC))
    path = path_for(web, ada, "2611.00001", "more")
    assert "aren't getting emails" in shown(web.client.get(path).text)
    web.client.post(path, data={"do": "record"})
    assert marks(web, ada) == {"2611.00001": MORE}


# --- tokens: purpose-bound, one reader, tamper-evident, expiring -----------------------------


def test_a_link_survives_token_version_rotation(web: Web) -> None:
    # Unversioned, like unsubscribe links: re-confirming must not kill the buttons in mail
    # already sent (see subscribers/tokens.py).
    seed_edition(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, "2611.00001", "more")
    with session_scope(web.runtime.sessions) as session:
        row = session.get(Subscriber, ada.id)
        assert row is not None
        revoke_links(row)
    assert web.client.post(path, data={"do": "record"}).status_code == 200
    assert marks(web, ada) == {"2611.00001": MORE}


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_tampered_link_gets_the_friendly_error_page(web: Web, method: str) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, "2611.00001", "more")
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    response = getattr(web.client, method)(
        tampered, **({"data": {"do": "record"}} if method == "post" else {})
    )
    assert response.status_code == 400
    assert "This link doesn't work" in shown(response.text)
    assert "Traceback" not in response.text
    assert marks(web, ada) == {}


def test_one_readers_link_cannot_act_for_another(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    bob = web.add("bob@example.org")
    mine = path_for(web, ada, "2611.00001", "less").rsplit("/", 1)[1]
    theirs = path_for(web, bob, "2611.00001", "less").rsplit("/", 1)[1]
    # Bob's subscriber id on Ada's signature, and Ada's paper and direction swapped around.
    forged = [
        f"{bob.id}." + mine.split(".", 1)[1],
        f"{ada.id}." + theirs.split(".", 1)[1],
        mine.replace(".less.", ".more."),
        mine.replace("2611.00001", "2611.00002"),
    ]
    for token in forged:
        response = web.client.post(f"/feedback/{token}", data={"do": "record"})
        assert response.status_code == 400, token
    assert marks(web, ada) == {} and marks(web, bob) == {}
    # Ada's genuine link acts for Ada only.
    web.client.post(f"/feedback/{mine}", data={"do": "record"})
    assert marks(web, ada) == {"2611.00001": LESS} and marks(web, bob) == {}


def test_other_purposes_tokens_are_refused_both_ways(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    for purpose in (Purpose.PREFERENCES, Purpose.UNSUBSCRIBE, Purpose.CONFIRM):
        token = web.token(purpose, ada)
        assert web.client.post(f"/feedback/{token}", data={"do": "record"}).status_code == 400
    feedback_token = path_for(web, ada, "2611.00001", "less").rsplit("/", 1)[1]
    assert web.client.get(f"/preferences/{feedback_token}").status_code == 400
    unsub = web.client.post(
        f"/unsubscribe/{feedback_token}", data={"List-Unsubscribe": "One-Click"}
    )
    assert unsub.status_code == 400
    assert web.subscriber("ada@example.org").status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]
    assert marks(web, ada) == {}


def test_an_expired_link_says_so(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    signed_at = 1_800_000_000
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: signed_at)
    path = path_for(web, ada, "2611.00001", "more")
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: signed_at + 89 * 86400)
    assert web.client.get(path).status_code == 200
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: signed_at + 91 * 86400)
    response = web.client.post(path, data={"do": "record"})
    assert response.status_code == 400
    assert "This link has expired" in response.text
    assert marks(web, ada) == {}


def test_an_erased_reader_or_paper_is_a_clear_answer(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    gone = path_for(web, ada, "2699.99999", "more")
    assert web.client.get(gone).status_code == 404
    path = path_for(web, ada, "2611.00001", "more")
    with session_scope(web.runtime.sessions) as session:
        row = session.get(Subscriber, ada.id)
        session.delete(row)
    assert web.client.post(path, data={"do": "record"}).status_code == 400


def test_the_access_log_never_holds_a_feedback_token() -> None:
    assert redact("/feedback/12.2611.00001.more.abc.def").startswith("/feedback/#")
    assert "2611.00001" not in redact("/feedback/12.2611.00001.more.abc.def")


def test_hostile_paper_fields_are_escaped(web: Web) -> None:
    seed_edition(web, hostile=True)
    ada = web.add("ada@example.org")
    page = web.client.get(path_for(web, ada, "2611.00000", "more")).text
    assert HOSTILE not in page and "<script>alert" not in page
    assert str(escape(HOSTILE)) in page


# --- muting from the feedback page ------------------------------------------------------


def test_mute_an_author_or_the_organisation(web: Web) -> None:
    ids = seed_distinct(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, ids[1], "less")
    page = web.client.get(path).text
    assert ">Mute Author 1A</button>" in page and ">Mute Lab 1</button>" in page
    response = web.client.post(path, data={"mute_author": "Author 1A"})
    assert response.status_code == 200
    assert "You won't get papers by Author 1A any more." in shown(response.text)
    assert "Author 1A is muted" in response.text
    web.client.post(path, data={"mute_organization": "Lab 1"})
    web.client.post(path, data={"mute_organization": "lab 1"})  # the same, once
    assert muted(web, ada) == (["Author 1A"], ["Lab 1"])
    assert marks(web, ada) == {}  # muting is not a mark


def test_only_the_papers_own_names_can_be_muted(web: Web) -> None:
    ids = seed_distinct(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, ids[1], "less")
    for data in ({"mute_author": "Author 2A"}, {"mute_organization": "Lab 2"}, {"mute_author": ""}):
        assert web.client.post(path, data=data).status_code == 400
    assert muted(web, ada) == ([], [])


def test_a_muted_author_or_organisation_is_never_in_the_next_digest(web: Web) -> None:
    ids = seed_distinct(web)
    ada = web.add("ada@example.org", follow_authors=["Author 1B"], follow_organizations=["Lab 2"])
    web.client.post(path_for(web, ada, ids[1], "less"), data={"mute_author": "author 1a"})
    web.client.post(path_for(web, ada, ids[2], "less"), data={"mute_organization": "Lab 2"})
    (digest,) = send_digests(web)
    text = plain(digest)
    assert "Distinct paper 0" in text and "Distinct paper 3" in text
    assert "Distinct paper 1" not in text  # by a muted author, though another is followed
    assert "Distinct paper 2" not in text  # from a muted organisation, though followed


# --- the digest carries the links; the public web copy does not ---------------------------


def test_every_card_of_a_sent_digest_has_both_links_in_both_parts(web: Web) -> None:
    seed_edition(web, papers=6)
    ada = web.add("ada@example.org", max_papers=5)
    bob = web.add("bob@example.org", max_papers=5, format="text")
    digests = {m["To"]: m for m in send_digests(web)}
    assert set(digests) == {"ada@example.org", "bob@example.org"}

    message = digests["ada@example.org"]
    text = plain(message)
    cards = re.findall(r"^\d+\.\s+(.+)$", text, flags=re.MULTILINE)
    assert len(cards) == 5
    text_links = re.findall(r"^    (More|Less) like this: (\S+)$", text, flags=re.MULTILINE)
    assert len(text_links) == 10
    anchors = Anchors(html_of(message)).anchors
    html_links = [(label, href) for href, label in anchors if label.endswith("like this")]
    assert [label for label, _ in html_links] == ["More like this", "Less like this"] * 5
    assert [url for _, url in html_links] == [url for _, url in text_links]
    with web.runtime.sessions() as session:
        titles = dict(session.execute(select(Paper.title, Paper.id)).all())
    for n, title in enumerate(cards):
        more, less = html_links[2 * n][1], html_links[2 * n + 1][1]
        assert claims_of(web, more) == (ada.id, titles[title], MORE)
        assert claims_of(web, less) == (ada.id, titles[title], LESS)
        assert web.client.get(more.removeprefix(web.runtime.links.base_url)).status_code == 200

    text_only = plain(digests["bob@example.org"])
    bob_links = re.findall(r"^    More like this: (\S+)$", text_only, flags=re.MULTILINE)
    assert len(bob_links) == 5 and all(claims_of(web, u)[0] == bob.id for u in bob_links)
    assert not set(bob_links) & {url for _, url in html_links}


def test_two_readers_of_one_variant_get_their_own_links(web: Web) -> None:
    seed_edition(web)
    web.add("ada@example.org")
    web.add("bob@example.org")
    digests = send_digests(web)
    with web.runtime.sessions() as session:
        keys = set(session.scalars(select(Delivery.variant_key)))
        assert {d.status for d in session.scalars(select(Delivery))} == {DeliveryStatus.SENT}
    assert len(keys) == 1  # one compiled variant ...
    links = [set(_FEEDBACK_URL.findall(plain(m))) for m in digests]
    assert len(links[0]) == len(links[1]) == 10 and not links[0] & links[1]  # ... own tokens


def test_the_public_web_copy_has_no_feedback_links(web: Web) -> None:
    seed_edition(web)
    web.add("ada@example.org")
    send_digests(web)
    for path in ("/editions/2026-11-26", "/editions", "/feed.atom", "/"):
        page = web.client.get(path).text
        assert "/feedback/" not in page, path
        assert "like this" not in page, path


# --- the preferences page: papers marked, names muted, undo -------------------------------


def _preferences(web: Web, subscriber: Subscriber) -> str:
    return f"/preferences/{web.token(Purpose.PREFERENCES, subscriber)}"


def test_preferences_list_marks_newest_first_with_undo(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    for pid, direction, minutes in (("2611.00001", "more", 0), ("2611.00003", "less", 5)):
        web.clock.now = dt.datetime(2026, 11, 26, 12, minutes, tzinfo=dt.UTC)
        web.client.post(path_for(web, ada, pid, direction), data={"do": "record"})
    page = web.client.get(_preferences(web, ada)).text
    assert "Papers you marked" in page
    section = page[page.index("Papers you marked") : page.index('id="muted"')]
    assert section.index("Paper 3 on diffusion") < section.index("Paper 1 on robotics")
    assert section.count(">Undo<") == 2
    assert "Less like this" in section and "More like this" in section


def test_undo_from_preferences_needs_the_pages_csrf_token(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    web.client.post(path_for(web, ada, "2611.00001", "more"), data={"do": "record"})
    prefs = _preferences(web, ada)
    refused = web.client.post(f"{prefs}/undo", data={"paper_id": "2611.00001"})
    assert refused.status_code == 403
    forged = web.client.post(
        f"{prefs}/undo", data={"paper_id": "2611.00001", "csrf_token": web.csrf()}
    )
    assert forged.status_code == 403
    assert marks(web, ada) == {"2611.00001": MORE}

    token = csrf_in(web.client.get(prefs).text)
    done = web.client.post(f"{prefs}/undo", data={"paper_id": "2611.00001", "csrf_token": token})
    assert done.status_code == 200
    assert "Undone: “Paper 1 on robotics”" in done.text
    assert marks(web, ada) == {}
    again = web.client.post(f"{prefs}/undo", data={"paper_id": "2611.00001", "csrf_token": token})
    assert again.status_code == 200 and "already gone" in again.text


def test_undo_cannot_touch_another_readers_marks(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    bob = web.add("bob@example.org")
    web.client.post(path_for(web, bob, "2611.00001", "more"), data={"do": "record"})
    prefs = _preferences(web, ada)
    token = csrf_in(web.client.get(prefs).text)
    web.client.post(f"{prefs}/undo", data={"paper_id": "2611.00001", "csrf_token": token})
    assert marks(web, bob) == {"2611.00001": MORE}


def test_preferences_show_at_most_fifty_marks(web: Web) -> None:
    seed_edition(web, papers=60)
    ada = web.add("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        for n in range(60):
            feedback.record(
                session,
                subscriber_id=ada.id,
                paper_id=f"2611.{n:05d}",
                direction=MORE,
                now=dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC) + dt.timedelta(minutes=n),
            )
    page = web.client.get(_preferences(web, ada)).text
    assert page.count('name="paper_id"') == feedback.MARKS_SHOWN
    assert "the latest 50 of 60" in page
    assert "Paper 59 on" in page and ">Paper 0 on" not in page


def test_unmute_from_preferences(web: Web) -> None:
    ids = seed_distinct(web)
    ada = web.add("ada@example.org")
    web.client.post(path_for(web, ada, ids[1], "less"), data={"mute_author": "Author 1A"})
    web.client.post(path_for(web, ada, ids[1], "less"), data={"mute_organization": "Lab 1"})
    prefs = _preferences(web, ada)
    page = web.client.get(prefs).text
    assert "Author 1A" in page and "Lab 1" in page and page.count(">Unmute<") == 2
    data = {"kind": "author", "name": "Author 1A"}
    assert web.client.post(f"{prefs}/unmute", data=data).status_code == 403
    token = csrf_in(page)
    done = web.client.post(f"{prefs}/unmute", data={**data, "csrf_token": token})
    assert done.status_code == 200 and "Unmuted Author 1A" in done.text
    assert muted(web, ada) == ([], ["Lab 1"])
    bad = web.client.post(
        f"{prefs}/unmute", data={"kind": "paper", "name": "x", "csrf_token": token}
    )
    assert bad.status_code == 400
    assert muted(web, ada) == ([], ["Lab 1"])


def test_a_paper_already_marked_this_way_offers_undo_instead(web: Web) -> None:
    seed_edition(web)
    ada = web.add("ada@example.org")
    path = path_for(web, ada, "2611.00001", "more")
    web.client.post(path, data={"do": "record"})
    page = web.client.get(path).text
    assert "You've marked this paper more like this." in shown(page)
    assert page.count('name="do"') == 1 and 'value="undo"' in page
    assert marks(web, ada) == {"2611.00001": MORE}
