"""Unsubscribe: GET is a page with a button, POST leaves, RFC 8058 one-click leaves at once."""

from __future__ import annotations

import datetime as dt
import html

import pytest

from papermail.db import session_scope
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Variant,
)
from papermail.subscribers.tokens import Purpose
from tests.support.web import (
    Web,
    confirm_path,
    csrf_in,
    seed_edition,
)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _path(web: Web, subscriber: Subscriber | int, version: int = 1) -> str:
    return f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, subscriber, version)}"


def _status(web: Web, address: str) -> SubscriberStatus:
    subscriber = web.subscriber(address)
    assert subscriber is not None
    return subscriber.status


def _plan_unsent_delivery(web: Web, subscriber: Subscriber) -> int:
    edition_id = seed_edition(web)
    with session_scope(web.runtime.sessions) as session:
        session.add(Variant(key="v1", edition_id=edition_id, format="html", selection=[]))
        session.flush()
        delivery = Delivery(
            subscriber_id=subscriber.id,
            edition_id=edition_id,
            variant_key="v1",
            status=DeliveryStatus.PENDING,
        )
        session.add(delivery)
        session.flush()
        return delivery.id


def _delivery_status(web: Web, delivery_id: int) -> DeliveryStatus:
    with web.runtime.sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery.status


def test_get_shows_one_button_and_changes_nothing(web: Web) -> None:
    ada = web.add("ada@example.org")
    response = web.client.get(_path(web, ada))
    assert response.status_code == 200
    page = response.text
    assert "ada@example.org" in page
    assert page.count('type="submit"') == 1
    assert 'name="reason"' in page and 'name="note"' in page
    assert _status(web, "ada@example.org") is SubscriberStatus.ACTIVE


def test_post_with_the_form_unsubscribes_and_keeps_the_reason(web: Web) -> None:
    ada = web.add("ada@example.org")
    path = _path(web, ada)
    token = csrf_in(web.client.get(path).text)
    response = web.client.post(
        path, data={"csrf_token": token, "reason": "too_many", "note": "lovely, but daily is a lot"}
    )
    assert response.status_code == 200
    assert "You're unsubscribed" in html.unescape(response.text)
    saved = web.subscriber("ada@example.org")
    assert saved is not None
    assert saved.status is SubscriberStatus.UNSUBSCRIBED
    assert saved.unsubscribe_reason == "Too many emails: lovely, but daily is a lot"
    assert saved.unsubscribed_at == web.clock()


def test_post_with_no_reason_is_fine(web: Web) -> None:
    ada = web.add("ada@example.org")
    path = _path(web, ada)
    web.client.post(path, data={"csrf_token": csrf_in(web.client.get(path).text)})
    saved = web.subscriber("ada@example.org")
    assert saved is not None and saved.status is SubscriberStatus.UNSUBSCRIBED
    assert saved.unsubscribe_reason is None


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"reason": "because"}, "reason", "Choose one of the reasons"),
        ({"note": "n" * 461}, "note", "under 460 characters"),
        ({"note": "one\r\ntwo"}, "note", "Line breaks"),
    ],
)
def test_bad_reason_input_is_refused_and_kept(
    web: Web, fields: dict[str, str], field: str, message: str
) -> None:
    ada = web.add("ada@example.org")
    path = _path(web, ada)
    data = {"csrf_token": csrf_in(web.client.get(path).text), "note": "kept"} | fields
    response = web.client.post(path, data=data)
    assert response.status_code == 400
    assert f'id="{field}-error"' in response.text
    assert message in html.unescape(response.text)
    if field != "note":
        assert 'value="kept"' in response.text
    assert _status(web, "ada@example.org") is SubscriberStatus.ACTIVE


def test_form_post_without_csrf_does_not_unsubscribe(web: Web) -> None:
    ada = web.add("ada@example.org")
    for data in ({}, {"csrf_token": "bogus"}, {"reason": "too_many"}):
        response = web.client.post(_path(web, ada), data=data)
        assert response.status_code == 403
    assert _status(web, "ada@example.org") is SubscriberStatus.ACTIVE


def test_one_click_post_unsubscribes_at_once_without_cookies_or_csrf(web: Web) -> None:
    ada = web.add("ada@example.org")
    web.client.cookies.clear()
    response = web.client.post(_path(web, ada), data=ONE_CLICK)
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    saved = web.subscriber("ada@example.org")
    assert saved is not None and saved.status is SubscriberStatus.UNSUBSCRIBED
    assert "one-click" in (saved.unsubscribe_reason or "")


def test_one_click_as_multipart_form_data_works_too(web: Web) -> None:
    ada = web.add("ada@example.org")
    response = web.client.post(_path(web, ada), files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert _status(web, "ada@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_one_click_skips_deliveries_planned_but_not_sent(web: Web) -> None:
    ada = web.add("ada@example.org")
    delivery_id = _plan_unsent_delivery(web, ada)
    web.client.post(_path(web, ada), data=ONE_CLICK)
    assert _delivery_status(web, delivery_id) is DeliveryStatus.SKIPPED


def test_one_click_twice_is_still_200(web: Web) -> None:
    ada = web.add("ada@example.org")
    assert web.client.post(_path(web, ada), data=ONE_CLICK).status_code == 200
    assert web.client.post(_path(web, ada), data=ONE_CLICK).status_code == 200


def test_one_click_for_an_erased_subscriber_is_200(web: Web) -> None:
    ada = web.add("ada@example.org")
    path = _path(web, ada)
    with session_scope(web.runtime.sessions) as session:
        session.query(Subscriber).delete()
    assert web.client.post(path, data=ONE_CLICK).status_code == 200
    page = web.client.get(path)
    assert page.status_code == 200 and "You're not subscribed" in html.unescape(page.text)


def test_unsubscribe_links_outlive_token_rotation(web: Web) -> None:
    ada = web.add("ada@example.org")
    old = _path(web, ada, version=1)
    with session_scope(web.runtime.sessions) as session:
        session.query(Subscriber).update({"token_version": 7})
    assert web.client.get(old).status_code == 200
    assert web.client.post(old, data=ONE_CLICK).status_code == 200
    assert _status(web, "ada@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_unsubscribe_links_outlive_leaving_and_coming_back(web: Web) -> None:
    # Leaving and signing up again rotate the token version; unsubscribe links ignore it.
    ada = web.add("ada@example.org")
    old = _path(web, ada)
    assert web.client.post(old, data=ONE_CLICK).status_code == 200
    web.subscribe("ada@example.org")
    web.confirm(confirm_path(web.outbox[0]))
    assert _status(web, "ada@example.org") is SubscriberStatus.ACTIVE
    assert web.subscriber("ada@example.org").token_version == 4  # type: ignore[union-attr]
    assert web.client.post(old, data=ONE_CLICK).status_code == 200
    assert _status(web, "ada@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_unsubscribe_links_work_after_months(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    from itsdangerous import TimestampSigner

    ada = web.add("ada@example.org")
    long_ago = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=400)).timestamp())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: long_ago)
    old = _path(web, ada)
    monkeypatch.undo()
    assert web.client.post(old, data=ONE_CLICK).status_code == 200


@pytest.mark.parametrize("purpose", [Purpose.PREFERENCES, Purpose.CONFIRM])
def test_other_purposes_cannot_unsubscribe(web: Web, purpose: Purpose) -> None:
    ada = web.add("ada@example.org")
    path = f"/unsubscribe/{web.token(purpose, ada)}"
    assert web.client.post(path, data=ONE_CLICK).status_code == 400
    assert web.client.get(path).status_code == 400
    assert _status(web, "ada@example.org") is SubscriberStatus.ACTIVE


def test_tampered_one_click_is_a_400_and_changes_nothing(web: Web) -> None:
    ada = web.add("ada@example.org")
    grace = web.add("grace@example.org")
    signature = _path(web, ada).rsplit(".", 1)[1]
    graces = _path(web, grace).rsplit(".", 1)[0]
    response = web.client.post(f"{graces}.{signature}", data=ONE_CLICK)
    assert response.status_code == 400
    assert "<h1>" in response.text
    assert _status(web, "grace@example.org") is SubscriberStatus.ACTIVE
    assert _status(web, "ada@example.org") is SubscriberStatus.ACTIVE


def test_already_unsubscribed_get_offers_to_come_back(web: Web) -> None:
    ada = web.add("ada@example.org", topics=["robotics"])
    web.client.post(_path(web, ada), data=ONE_CLICK)
    page = web.client.get(_path(web, ada)).text
    assert "You're not subscribed" in html.unescape(page)
    assert "Subscribe again" in page


def test_resubscribing_from_the_page_is_double_opt_in_again(web: Web) -> None:
    ada = web.add("ada@example.org", topics=["robotics"], frequency="weekly")
    path = _path(web, ada)
    done = web.client.post(path, data={"csrf_token": csrf_in(web.client.get(path).text)})
    assert 'action="/subscribe"' in done.text
    form = {
        "csrf_token": csrf_in(done.text),
        "email": "ada@example.org",
        "topics": "robotics",
        "frequency": "weekly",
    }
    assert 'name="topics" value="robotics"' in done.text
    assert 'name="frequency" value="weekly"' in done.text
    again = web.client.post("/subscribe", data=form)
    assert "Check your inbox" in again.text
    assert _status(web, "ada@example.org") is SubscriberStatus.UNSUBSCRIBED
    [message] = web.outbox
    web.confirm(confirm_path(message))
    assert _status(web, "ada@example.org") is SubscriberStatus.ACTIVE


def test_resubscribing_from_the_page_keeps_the_arxiv_categories(web: Web) -> None:
    ada = web.add("ada@example.org", arxiv_categories=["cs.RO", "stat.ML"])
    path = _path(web, ada)
    done = web.client.post(path, data={"csrf_token": csrf_in(web.client.get(path).text)})
    assert 'name="arxiv_categories" value="cs.RO, stat.ML"' in done.text
    form = {
        "csrf_token": csrf_in(done.text),
        "email": "ada@example.org",
        "topics": "",
        "arxiv_categories": "cs.RO, stat.ML",
        "frequency": "daily",
    }
    assert "Check your inbox" in web.client.post("/subscribe", data=form).text
    assert web.subscriber("ada@example.org").arxiv_categories == ["cs.RO", "stat.ML"]  # type: ignore[union-attr]


def test_suppressed_reader_gets_no_resubscribe_button(web: Web) -> None:
    ada = web.add("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        session.query(Subscriber).update({"status": SubscriberStatus.SUPPRESSED})
    page = web.client.get(_path(web, ada)).text
    assert "Subscribe again" not in page
