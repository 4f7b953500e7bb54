"""Headers, caching, body limits, CSRF tokens, error pages and logs that never hold tokens."""

from __future__ import annotations

import logging
import re

import pytest

from papermail.subscribers.tokens import Purpose
from papermail.web.app import redact
from papermail.web.csrf import CsrfGuard, cookie_binding, link_binding
from tests.support.web import (
    Web,
    csrf_in,
    seed_edition,
)

SECRET = "test-secret-key-that-is-long-enough-0123456789"  # noqa: S105 (a test key)


def _pages(web: Web) -> list[str]:
    ada = web.add("ada@example.org")
    return [
        "/",
        "/editions",
        "/editions/2026-11-26",
        "/feed.atom",
        "/healthz",
        "/nowhere",
        f"/preferences/{web.token(Purpose.PREFERENCES, ada)}",
        f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, ada)}",
        f"/confirm/{web.token(Purpose.CONFIRM, 99)}",
    ]


def test_every_response_carries_the_security_headers(web: Web) -> None:
    seed_edition(web)
    for path in _pages(web):
        headers = web.client.get(path, follow_redirects=False).headers
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp, path


def test_pages_behind_links_are_never_cached(web: Web) -> None:
    ada = web.add("ada@example.org")
    for purpose, prefix in (
        (Purpose.PREFERENCES, "preferences"),
        (Purpose.UNSUBSCRIBE, "unsubscribe"),
    ):
        response = web.client.get(f"/{prefix}/{web.token(purpose, ada)}")
        assert response.headers["cache-control"] == "no-store"
    assert web.client.get("/").headers["cache-control"] == "no-store"  # has a CSRF token


def test_pages_use_no_inline_scripts_styles_or_third_parties(web: Web) -> None:
    seed_edition(web)
    for path in _pages(web):
        page = web.client.get(path).text
        assert "<script" not in page and "style=" not in page and "<style" not in page, path
        external = re.findall(r'(?:src|href)="(https?://[^"]+)"', page)
        assert all(
            url.startswith(
                (
                    "https://papers.example.org",
                    "https://huggingface.co",
                    "https://github.com",
                    "https://arxiv.org",
                )
            )
            for url in external
        ), (path, external)


def test_stylesheet_is_served_and_cacheable(web: Web) -> None:
    page = web.client.get("/").text
    href = re.search(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert href and href[1].startswith("/static/papermail.css?v=")
    css = web.client.get(href[1])
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "immutable" in css.headers["cache-control"]
    assert "#4f46e5" in css.text  # the email's accent colour


def test_pages_are_labelled_for_screen_readers(web: Web) -> None:
    ada = web.add("ada@example.org")
    for path in (
        "/",
        f"/preferences/{web.token(Purpose.PREFERENCES, ada)}",
        f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, ada)}",
    ):
        page = web.client.get(path).text
        assert '<html lang="en">' in page
        assert 'name="viewport" content="width=device-width, initial-scale=1"' in page
        assert '<main id="main"' in page and 'href="#main"' in page
        for control in re.findall(r'<input type="(?:text|email|number)" id="([^"]+)"', page):
            assert f'<label for="{control}">' in page, (path, control)
        for select in re.findall(r'<select id="([^"]+)"', page):
            assert f'<label for="{select}">' in page, (path, select)
        for radio in re.findall(r'<input type="radio" id="([^"]+)"', page):
            assert f'<label for="{radio}">' in page, (path, radio)


def test_oversized_bodies_are_refused(web: Web) -> None:
    response = web.client.post(
        "/subscribe",
        content=b"email=" + b"a" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


def test_chunked_oversized_bodies_are_refused(web: Web) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b"email="
        for _ in range(20):
            yield b"a" * 8192

    response = web.client.post(
        "/subscribe",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


def test_file_uploads_are_refused(web: Web) -> None:
    ada = web.add("ada@example.org")
    response = web.client.post(
        f"/unsubscribe/{web.token(Purpose.UNSUBSCRIBE, ada)}",
        files={"List-Unsubscribe": ("x.txt", b"One-Click", "text/plain")},
    )
    assert response.status_code == 400
    assert web.subscriber("ada@example.org").status.value == "active"  # type: ignore[union-attr]


def test_unknown_pages_and_methods_get_html_error_pages(web: Web) -> None:
    missing = web.client.get("/wp-login.php")
    assert missing.status_code == 404 and "Page not found" in missing.text
    wrong = web.client.delete("/")
    assert wrong.status_code == 405 and "<h1>" in wrong.text
    assert web.client.get("/docs").status_code == 404
    assert web.client.get("/openapi.json").status_code == 404


def test_access_log_and_error_log_never_hold_tokens(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    ada = web.add("ada@example.org")
    tokens = [web.token(p, ada) for p in Purpose]
    caplog.set_level(logging.DEBUG)
    for purpose, token in zip(Purpose, tokens, strict=True):
        web.client.get(f"/{purpose.value}/{token}", follow_redirects=False)
        web.client.get(f"/{purpose.value}/{token}tampered")
    web.client.post(f"/unsubscribe/{tokens[2]}", data={"List-Unsubscribe": "One-Click"})
    # Everything the server side logged (httpx, the test's own client, logs full URLs).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("papermail"))
    assert "/preferences/#" in logged  # the access log ran
    for token in tokens:
        assert token not in logged
        assert token.rsplit(".", 1)[1] not in logged  # not even the signature


def test_redact_keeps_the_route_and_drops_the_token() -> None:
    assert redact("/unsubscribe/WzEsMV0.abc.def").startswith("/unsubscribe/#")
    assert "WzEsMV0" not in redact("/preferences/WzEsMV0.abc.def")
    assert redact("/editions/2026-11-26") == "/editions/2026-11-26"


def test_csrf_tokens_are_bound_and_signed() -> None:
    guard = CsrfGuard(SECRET)
    token = guard.issue(cookie_binding("cookie-value-1234567890"))
    assert guard.check(token, cookie_binding("cookie-value-1234567890"))
    assert not guard.check(token, cookie_binding("another-cookie-1234567890"))
    assert not guard.check(token, link_binding("cookie-value-1234567890"))
    assert not guard.check(token, None)
    assert not guard.check(None, cookie_binding("x"))
    assert not CsrfGuard("another-secret-entirely-0123456789").check(
        token, cookie_binding("cookie-value-1234567890")
    )
    link = guard.issue(link_binding("tok"))
    assert guard.check(link, link_binding("tok")) and not guard.check(link, link_binding("tok2"))


def test_csrf_tokens_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from itsdangerous import TimestampSigner

    guard = CsrfGuard(SECRET)
    old = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).timestamp())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: old)
    token = guard.issue(link_binding("tok"))
    monkeypatch.undo()
    assert not guard.check(token, link_binding("tok"))


def test_csrf_cookie_is_httponly_samesite_and_secure(web: Web) -> None:
    cookie = web.client.get("/").headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    assert csrf_in(web.client.get("/").text)
