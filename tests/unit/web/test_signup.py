"""Landing page, subscribe form (double opt-in, no enumeration, limits), confirm link."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from itsdangerous import TimestampSigner

from papermail.config import Settings
from papermail.db import session_scope
from papermail.models import SubscriberStatus
from papermail.pipeline.relevance import DEFAULT_WEIGHT
from papermail.sources.arxiv_taxonomy import CATEGORIES
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.signup_limits import Budget, SignupLimits
from papermail.subscribers.tokens import Purpose
from tests.support.web import (
    HOSTILE,
    Web,
    confirm_path,
    csrf_in,
    make_web,
    running_web,
    seed_edition,
    text_of,
)

# -- landing ---------------------------------------------------------------------------------


def test_landing_shows_form_and_a_sample_of_the_latest_edition(web: Web) -> None:
    seed_edition(web, papers=5)
    response = web.client.get("/")
    assert response.status_code == 200
    page = response.text
    assert '<form method="post" action="/subscribe"' in page
    assert '<label for="email">Email address</label>' in page
    assert 'name="frequency" value="weekly"' in page
    assert "From the latest edition" in page
    assert page.count('class="card paper"') == 3  # a sample, not the whole edition
    assert "All 5 papers of this edition" in page
    assert 'href="/editions/2026-11-26"' in page
    assert "pm_csrf" in response.headers["set-cookie"]


def test_get_on_the_form_address_leads_to_the_form(web: Web) -> None:
    response = web.client.get("/subscribe", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/#subscribe"


def test_landing_offers_arxiv_categories_by_name_without_javascript(web: Web) -> None:
    page = web.client.get("/").text
    shown = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())
    assert '<fieldset id="arxiv_categories"' in page
    assert page.count('type="checkbox"') == len(CATEGORIES)
    assert 'name="arxiv_categories" value="cs.RO">' in page  # none ticked yet
    assert "cs.RO — Robotics" in shown and "stat.ML — Machine Learning (Statistics)" in shown
    # One closed <details> per archive: a phone sees five lines, not fifty boxes.
    assert page.count('<details class="archive">') == 5
    assert "<summary>Computer Science</summary>" in page
    assert "<script" not in page


def test_landing_without_any_edition_still_works(web: Web) -> None:
    page = web.client.get("/").text
    assert "The first edition is on its way" in page


def test_landing_escapes_paper_titles(web: Web) -> None:
    seed_edition(web, hostile=True)
    page = web.client.get("/").text
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page
    assert "javascript:" not in page


# -- subscribe -------------------------------------------------------------------------------


def test_subscribe_creates_pending_and_sends_one_confirmation(web: Web) -> None:
    response = web.subscribe(
        "New.Reader@Example.org", topics="diffusion, robotics", frequency="weekly"
    )
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert "within 48 hours" in response.text  # the confirm link's real lifetime
    subscriber = web.subscriber("new.reader@example.org")
    assert subscriber is not None
    assert subscriber.status is SubscriberStatus.PENDING
    assert subscriber.topics == ["diffusion", "robotics"]
    assert subscriber.frequency.value == "weekly"
    [message] = web.outbox
    assert message["To"] == "new.reader@example.org"
    assert "Confirm" in message["Subject"]
    assert message["Message-ID"].endswith("@papers.example.org>")
    assert message.get_body(preferencelist=("html",)) is not None
    assert "diffusion, robotics" in text_of(message)
    assert confirm_path(message).startswith("/confirm/")


def test_known_and_unknown_addresses_get_the_same_page(web: Web) -> None:
    web.add("known@example.org")
    web.add("suppressed@example.org")
    with session_scope(web.runtime.sessions) as session:
        session.query(type(web.subscriber("suppressed@example.org"))).filter_by(
            email="suppressed@example.org"
        ).update({"status": SubscriberStatus.SUPPRESSED})

    def body(address: str) -> str:
        return web.subscribe(address).text.replace(address, "ADDRESS")

    unknown = body("unknown@example.org")
    assert body("known@example.org") == unknown
    assert body("suppressed@example.org") == unknown


def test_suppressed_address_gets_no_email(web: Web) -> None:
    web.add("bounced@example.org")
    with session_scope(web.runtime.sessions) as session:
        from papermail.models import Subscriber

        session.query(Subscriber).update({"status": SubscriberStatus.SUPPRESSED})
    assert web.subscribe("bounced@example.org").status_code == 200
    assert web.outbox == []


def test_subscribing_an_active_address_changes_nothing_but_mails_a_way_in(web: Web) -> None:
    web.add("ada@example.org", topics=["diffusion"], max_papers=4)
    web.subscribe("ada@example.org", topics="cooking", frequency="weekly")
    ada = web.subscriber("ada@example.org")
    assert ada is not None
    assert (ada.status, ada.topics, ada.frequency.value) == (
        SubscriberStatus.ACTIVE,
        ["diffusion"],
        "daily",
    )
    [message] = web.outbox  # its link lands on their preferences page
    for _ in range(2):  # and changes nothing: the preferences links in their digests live on
        response = web.confirm(confirm_path(message), follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/preferences/")
        assert web.subscriber("ada@example.org").token_version == 1  # type: ignore[union-attr]


def test_unsubscribed_address_needs_to_confirm_again(web: Web) -> None:
    ada = web.add("ada@example.org")
    web.client.post(
        f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, ada)}",
        data={"List-Unsubscribe": "One-Click"},
    )
    web.subscribe("ada@example.org", topics="robotics")
    again = web.subscriber("ada@example.org")
    assert again is not None
    assert again.status is SubscriberStatus.UNSUBSCRIBED  # not before the link is opened
    assert again.topics == ["robotics"]
    [message] = web.outbox
    web.confirm(confirm_path(message))
    assert web.subscriber("ada@example.org").status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]


def test_pending_signup_resubmitted_takes_the_latest_choices(web: Web) -> None:
    web.subscribe("ada@example.org", topics="diffusion")
    web.subscribe("ada@example.org", topics="robotics", frequency="weekly")
    ada = web.subscriber("ada@example.org")
    assert ada is not None and ada.topics == ["robotics"] and ada.frequency.value == "weekly"
    assert len(web.outbox) == 2


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"email": ""}, "email", "Enter your email address."),
        ({"email": "not-an-address"}, "email", "Enter it like name@example.org."),
        ({"email": "a@" + "b" * 260 + ".org"}, "email", "too long"),
        ({"email": "ada@example.org\r\nBcc: victim@example.org"}, "email", "Line breaks"),
        ({"email": "ada\x00@example.org"}, "email", "characters that aren't allowed"),
        ({"frequency": "hourly"}, "frequency", "Choose daily or weekly."),
        ({"topics": ", ".join(f"t{n}" for n in range(25))}, "topics", "at most 20 topics"),
        ({"topics": "x" * 81}, "topics", "under 80 characters"),
        ({"topics": "a\nb"}, "topics", "Line breaks"),
        ({"topics": "y" * 1200}, "topics", "under 1000 characters"),
        ({"arxiv_categories": ["cs.RO", "cs.Cv"]}, "arxiv_categories", "(cs.Cv)"),
        ({"arxiv_categories": list(CATEGORIES)[:21]}, "arxiv_categories", "at most 20"),
    ],
)
def test_bad_subscribe_input_is_shown_next_to_the_field(
    web: Web, fields: dict[str, str | list[str]], field: str, message: str
) -> None:
    data = {"email": "ada@example.org", "topics": "diffusion", "frequency": "daily"} | fields
    response = web.client.post("/subscribe", data=data | {"csrf_token": web.csrf()})
    assert response.status_code == 400
    page = response.text
    assert f'id="{field}-error"' in page
    assert message in html.unescape(page)
    assert 'aria-invalid="true"' in page
    assert f'aria-describedby="{field}' in page or f"{field}-hint {field}-error" in page
    assert web.outbox == []
    assert web.subscriber("ada@example.org") is None


def test_subscribe_stores_the_ticked_categories_and_the_default_blend(web: Web) -> None:
    response = web.subscribe("ada@example.org", arxiv_categories=["cs.RO", "stat.ML", "cs.RO"])
    assert response.status_code == 200
    ada = web.subscriber("ada@example.org")
    assert ada is not None
    assert ada.arxiv_categories == ["cs.RO", "stat.ML"]
    assert ada.relevance_weight == DEFAULT_WEIGHT  # the landing form does not ask
    assert len(web.outbox) == 1


def test_a_refused_signup_keeps_the_ticked_categories(web: Web) -> None:
    response = web.subscribe("ada(at)example.org", arxiv_categories=["cs.RO", "eess.IV"])
    assert response.status_code == 400
    page = response.text
    assert 'name="arxiv_categories" value="cs.RO" checked>' in page
    assert 'name="arxiv_categories" value="eess.IV" checked>' in page
    assert page.count('checked><label for="arxiv_categories-') == 2
    # The groups holding a choice say so, closed: the error is about the address.
    assert page.count('<details class="archive">') == 5
    assert '<summary>Computer Science <span class="count">· 1 chosen: cs.RO</span>' in page


def test_a_refused_category_opens_the_groups_holding_the_choices(web: Web) -> None:
    response = web.subscribe("ada@example.org", arxiv_categories=["cs.RO", "cs.Robots"])
    assert response.status_code == 400
    assert response.text.count('<details class="archive" open>') == 1  # Computer Science
    assert web.subscriber("ada@example.org") is None and web.outbox == []


def test_bad_input_keeps_what_was_typed(web: Web) -> None:
    response = web.client.post(
        "/subscribe",
        data={
            "email": "ada(at)example.org",
            "topics": 'diffusion, "><b>x',
            "frequency": "weekly",
            "csrf_token": web.csrf(),
        },
    )
    page = response.text
    assert 'value="ada(at)example.org"' in page
    assert 'value="diffusion, &#34;&gt;&lt;b&gt;x"' in page  # kept, and escaped
    assert 'id="frequency-weekly" name="frequency" value="weekly" checked' in page


def test_subscribe_without_csrf_cookie_or_token_sends_nothing(web: Web) -> None:
    token = web.csrf()
    web.client.cookies.clear()
    refused = web.client.post("/subscribe", data={"email": "ada@example.org", "csrf_token": token})
    assert refused.status_code == 403
    assert "This form had expired" in refused.text
    assert 'value="ada@example.org"' in refused.text  # kept
    missing = web.client.post("/subscribe", data={"email": "ada@example.org"})
    assert missing.status_code == 403
    forged = web.client.post(
        "/subscribe", data={"email": "ada@example.org", "csrf_token": "forged.token.value"}
    )
    assert forged.status_code == 403
    assert web.outbox == [] and web.subscriber("ada@example.org") is None


def test_csrf_token_from_another_browser_is_refused(web: Web, settings: Settings) -> None:
    other = make_web(settings)
    stolen = csrf_in(other.client.get("/").text)  # same secret, another cookie
    web.client.get("/")
    response = web.client.post(
        "/subscribe", data={"email": "ada@example.org", "csrf_token": stolen}
    )
    assert response.status_code == 403


def test_address_limit_stops_mail_but_not_the_page(settings: Settings) -> None:
    web = make_web(settings)
    web.app.state.web.limits.per_address = Budget(limit=3, window_seconds=86400)
    pages = {web.subscribe("ada@example.org").text for _ in range(5)}
    assert len(pages) == 1  # the same "check your inbox" every time
    assert len(web.outbox) == 3
    web.subscribe("grace@example.org")
    assert len(web.outbox) == 4  # another address has its own budget


def test_ip_limit_answers_429(settings: Settings) -> None:
    web = make_web(settings)
    web.app.state.web.limits.per_ip = Budget(limit=2, window_seconds=3600)
    assert web.subscribe("a@example.org").status_code == 200
    assert web.subscribe("b@example.org").status_code == 200
    blocked = web.subscribe("c@example.org")
    assert blocked.status_code == 429
    assert "Too many sign-ups" in blocked.text
    assert blocked.headers["retry-after"] == "3600"
    assert web.subscriber("c@example.org") is None
    assert len(web.outbox) == 2


def test_limits_are_fixed_windows_in_redis(redis) -> None:  # type: ignore[no-untyped-def]
    now = [1_000_000.0]
    limits = SignupLimits(redis, per_address=Budget(2, 3600), clock=lambda: now[0])
    assert [limits.allow_address("a@example.org") for _ in range(3)] == [True, True, False]
    now[0] += 3600
    assert limits.allow_address("a@example.org")
    assert not any(b"a@example.org" in key for key in redis.keys("*"))  # hashed
    assert all(0 < redis.ttl(key) <= 3660 for key in redis.keys("*"))


# -- confirm ---------------------------------------------------------------------------------


def test_confirm_link_activates_and_lands_on_preferences(web: Web) -> None:
    web.subscribe("ada@example.org", topics="diffusion")
    [message] = web.outbox
    response = web.confirm(confirm_path(message), follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/preferences/") and location.endswith("?welcome=1")
    ada = web.subscriber("ada@example.org")
    assert ada is not None
    assert ada.status is SubscriberStatus.ACTIVE
    assert ada.confirmed_at == web.clock()
    page = web.client.get(location)
    assert page.status_code == 200
    assert "You're subscribed" in page.text
    assert 'value="diffusion"' in page.text


def _used_page(response) -> str:  # type: ignore[no-untyped-def]
    """The "already used" page: in the site's message layout, changing nothing."""
    assert response.status_code == 410
    page = html.unescape(response.text)
    assert "<h1>This link has already been used</h1>" in page
    assert 'class="site-header"' in page and "/preferences/" not in page
    return page


def test_a_confirm_link_works_once(web: Web) -> None:
    web.subscribe("ada@example.org")
    path = confirm_path(web.outbox[0])
    first = web.confirm(path, follow_redirects=False)
    assert first.status_code == 303
    page = _used_page(web.client.get(path, follow_redirects=False))
    assert "you're subscribed" in page  # a scanner may have opened it first: reassure
    ada = web.subscriber("ada@example.org")
    assert ada is not None and ada.status is SubscriberStatus.ACTIVE


def test_confirming_lands_on_preferences_of_the_new_token_version(web: Web) -> None:
    web.subscribe("ada@example.org")
    location = web.confirm(confirm_path(web.outbox[0]), follow_redirects=False).headers["location"]
    token = location.removeprefix("/preferences/").removesuffix("?welcome=1")
    claims = web.runtime.links.signer.read(Purpose.PREFERENCES, token)
    ada = web.subscriber("ada@example.org")
    assert ada is not None and claims.token_version == ada.token_version == 2
    assert web.client.get(location).status_code == 200
    assert (
        web.client.get(f"/preferences/{web.token(Purpose.PREFERENCES, ada, 1)}").status_code == 400
    )


def test_a_used_confirm_link_does_not_resubscribe_someone_who_left(web: Web) -> None:
    # Subscribe, confirm, leave with one click; then a mail scanner or a forwarded
    # email opens the same confirmation link again.
    web.subscribe("ada@example.org")
    path = confirm_path(web.outbox[0])
    web.confirm(path)
    ada = web.subscriber("ada@example.org")
    assert ada is not None
    web.client.post(
        f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, ada)}",
        data={"List-Unsubscribe": "One-Click"},
    )
    page = _used_page(web.client.get(path, follow_redirects=False))
    assert "you're subscribed" not in page and "sign up again" in page
    assert 'href="/#subscribe"' in page
    gone = web.subscriber("ada@example.org")
    assert gone is not None
    assert (gone.status, gone.unsubscribed_at) == (SubscriberStatus.UNSUBSCRIBED, web.clock())


def test_signing_up_again_revokes_every_link_from_before(web: Web) -> None:
    web.subscribe("ada@example.org")
    first_confirm = confirm_path(web.outbox[0])
    welcome = web.confirm(first_confirm, follow_redirects=False).headers["location"]
    ada = web.subscriber("ada@example.org")
    assert ada is not None
    unsubscribe = f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, ada)}"
    web.client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    web.subscribe("ada@example.org", topics="robotics")
    second_confirm = confirm_path(web.outbox[1])
    _used_page(web.client.get(first_confirm, follow_redirects=False))
    assert web.client.get(welcome).status_code == 400  # the old preferences link
    assert web.subscriber("ada@example.org").status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
    back = web.confirm(second_confirm, follow_redirects=False)
    assert back.status_code == 303
    assert web.client.get(back.headers["location"]).status_code == 200
    assert web.client.get(welcome).status_code == 400
    assert web.client.get(unsubscribe).status_code == 200  # unsubscribe links never die


@pytest.mark.parametrize("purpose", [Purpose.PREFERENCES, Purpose.UNSUBSCRIBE])
def test_other_purposes_cannot_confirm(web: Web, purpose: Purpose) -> None:
    ada = web.add("ada@example.org", confirmed=False)
    response = web.client.get(f"/confirm/{web.token(purpose, ada)}")
    assert response.status_code == 400
    assert "This link doesn't work" in html.unescape(response.text)
    assert web.subscriber("ada@example.org").status is SubscriberStatus.PENDING  # type: ignore[union-attr]


def test_tampered_confirm_link_gets_a_friendly_400(web: Web) -> None:
    ada = web.add("ada@example.org", confirmed=False)
    token = web.token(Purpose.CONFIRM, ada)
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "garbage", "a.b.c"):
        response = web.client.get(f"/confirm/{bad}")
        assert response.status_code == 400
        assert "<h1>" in response.text and "Subscribe" in response.text


def test_expired_confirm_link_offers_to_subscribe_again(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = web.add("ada@example.org", confirmed=False)
    three_days_ago = int(dt.datetime.now(dt.UTC).timestamp()) - 3 * 86400
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: three_days_ago)
    token = web.token(Purpose.CONFIRM, ada)
    monkeypatch.undo()
    response = web.client.get(f"/confirm/{token}")
    assert response.status_code == 400
    assert "This confirmation link has expired" in response.text
    assert web.subscriber("ada@example.org").status is SubscriberStatus.PENDING  # type: ignore[union-attr]


def test_confirm_link_of_an_old_token_version_changes_nothing(web: Web) -> None:
    ada = web.add("ada@example.org", confirmed=False)
    token = web.token(Purpose.CONFIRM, ada, version=1)
    with session_scope(web.runtime.sessions) as session:
        from papermail.models import Subscriber

        session.query(Subscriber).update({"token_version": 2})
    page = _used_page(web.client.get(f"/confirm/{token}"))
    assert "only the newest one we sent counts" in page
    assert web.subscriber("ada@example.org").status is SubscriberStatus.PENDING  # type: ignore[union-attr]


def test_suppressed_address_cannot_confirm(web: Web) -> None:
    web.subscribe("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        from papermail.models import Subscriber

        session.query(Subscriber).update({"status": SubscriberStatus.SUPPRESSED})
    assert web.client.get(confirm_path(web.outbox[0])).status_code == 400
    assert web.subscriber("ada@example.org").status is SubscriberStatus.SUPPRESSED  # type: ignore[union-attr]


def test_confirm_link_for_an_expired_signup_is_refused(web: Web) -> None:
    from papermail.subscribers import confirmations

    web.subscribe("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        assert confirmations.expire_pending(session, now=web.clock() + dt.timedelta(days=8)) == 1
    response = web.client.get(confirm_path(web.outbox[0]))
    assert response.status_code == 400
    assert "Subscribe again" in response.text


def test_signup_form_prefs_reach_the_database_validated(web: Web) -> None:
    web.subscribe("ada@example.org", topics=" diffusion ,, Diffusion; robotics ")
    ada = web.subscriber("ada@example.org")
    assert ada is not None
    assert Preferences.of(ada).topics == ["diffusion", "robotics"]


def test_confirmation_email_escapes_what_was_typed(web: Web) -> None:
    web.subscribe("ada@example.org", topics=HOSTILE.replace(",", ""))
    [message] = web.outbox
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    assert "<script>" not in str(html_part.get_content())


def test_a_new_reader_gets_the_configured_number_of_papers(settings: Settings) -> None:
    for web in running_web(settings.model_copy(update={"default_max_papers": 6})):
        web.subscribe("six@example.org")
        subscriber = web.subscriber("six@example.org")
        assert subscriber is not None and subscriber.max_papers == 6
