"""HEAD on every GET route: GET's status and headers, no body (web/app.py's HeadAsGet)."""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator

import pytest

from papermail.models import SubscriberStatus
from papermail.subscribers.tokens import Purpose
from tests.support.server import serving
from tests.support.web import Web, confirm_path, seed_edition

# Headers that may differ between two answers to the same request.
VARYING = {"date", "content-length", "set-cookie"}


@pytest.fixture
def seeded(web: Web) -> Web:
    seed_edition(web)
    return web


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/editions",
        "/editions/2026-11-26",
        "/feed.atom",
        "/healthz",
        "/readyz",
        "/static/papermail.css",
        "/subscribe",  # a redirect: HEAD gets the same 303 and Location
        "/ops",
        "/ops/status.json",
        "/ops/static/ops.js",
        "/metrics",
        "/no/such/page",  # GET's 404, not 405
    ],
)
def test_head_answers_like_get_without_a_body(seeded: Web, path: str) -> None:
    get = seeded.client.get(path, follow_redirects=False)
    head = seeded.client.head(path, follow_redirects=False)

    assert head.status_code == get.status_code != 405
    assert head.content == b""
    assert {k: v for k, v in head.headers.items() if k not in VARYING} == {
        k: v for k, v in get.headers.items() if k not in VARYING
    }


def test_head_says_how_long_the_body_would_be(seeded: Web) -> None:
    get = seeded.client.get("/feed.atom")
    head = seeded.client.head("/feed.atom")
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))


def test_head_on_a_token_page_is_the_page(seeded: Web) -> None:
    subscriber = seeded.add("ada@example.org")
    token = seeded.token(Purpose.PREFERENCES, subscriber)
    head = seeded.client.head(f"/preferences/{token}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/html")


def test_opening_a_confirmation_link_changes_nothing_until_the_button(web: Web) -> None:
    # Link checkers send HEAD and mail scanners GET every link: neither may subscribe
    # anyone or use the link up. Only the page's button (a POST) confirms.
    web.subscribe("ada@example.org")
    [message] = web.outbox
    path = confirm_path(message)

    head = web.client.head(path, follow_redirects=False)
    get = web.client.get(path, follow_redirects=False)

    assert head.status_code == get.status_code == 200 and head.content == b""
    assert 'action="/confirm/' in get.text
    assert web.subscriber("ada@example.org").status is SubscriberStatus.PENDING  # type: ignore[union-attr]
    done = web.client.post(path, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/preferences/")
    assert web.subscriber("ada@example.org").status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]


def test_a_post_only_route_still_refuses_head(web: Web) -> None:
    assert web.client.get("/ops/pause").status_code == 405
    assert web.client.head("/ops/pause").status_code == 405


def test_the_access_log_says_head(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="papermail.web.access")
    web.client.head("/healthz")
    assert any(r.getMessage().startswith("HEAD /healthz 200") for r in caplog.records)


@pytest.fixture
def served(web: Web) -> Iterator[int]:
    """The app behind a real uvicorn, which decides from *its* scope whether to send a body."""
    with serving(web.app, lifespan="off") as url:
        yield int(url.rsplit(":", 1)[1])


def test_a_real_server_sends_no_body_and_keeps_the_connection_usable(served: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=5)
    try:
        connection.request("HEAD", "/")
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        assert int(head.headers["content-length"]) > 0
        # Any stray body bytes would now be read as the start of the next response.
        connection.request("GET", "/healthz")
        after = connection.getresponse()
        assert after.status == 200 and after.read() == b'{"status":"ok"}'
    finally:
        connection.close()
