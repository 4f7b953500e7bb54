"""/ops/subscribers, the subscriber desk, through TestClient (SQLite + fakeredis, the
memory mail backend, confirmations sent inline)."""

from __future__ import annotations

import csv
import datetime as dt
import email
import io
import json
import re
from email import policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from papermail.config import Settings
from papermail.delivery.memory import MemoryBackend
from papermail.models import AuditEntry, DeliveryStatus, Subscriber, SubscriberStatus
from papermail.ops.control import sending_paused
from papermail.subscribers import imports
from papermail.web.ops import desk as desk_routes
from papermail.web.ops import desk_csv
from papermail.wiring import Wiring
from tests.support.desk import seed_papers_edition
from tests.support.ledger import seed_delivery, seed_edition, seed_subscriber
from tests.support.web import HOSTILE, make_web
from tests.unit.web.test_ops import AUTH, make_client, make_runtime, token_from

HOSTILE_REASON = '<script>alert("reason")</script>[red]x[/red]'
# What a database could hold if a row came from elsewhere (an old import, psql): the desk
# must show it escaped whatever the validation at the front door says.
HOSTILE_ADDRESS = '"><img src=x onerror=alert(1)>@example.org'


@pytest.fixture
def rt(tmp_path: Path) -> Wiring:
    return make_runtime(tmp_path)


@pytest.fixture
def client(rt: Wiring) -> TestClient:
    return make_client(rt)


def add(rt: Wiring, address: str, **kw: object) -> int:
    with rt.sessions() as session:
        subscriber = seed_subscriber(session, email=address, **kw)  # type: ignore[arg-type]
        subscriber.confirmed_at = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
        session.commit()
        return subscriber.id


def token(client: TestClient, path: str = "/ops/subscribers") -> str:
    page = client.get(path, auth=AUTH)
    assert page.status_code == 200, page.text
    return token_from(page.text)


def state(rt: Wiring) -> tuple[list[tuple[str, str, int]], int]:
    """Everything the desk could change: each subscriber and the audit log's length."""
    with rt.sessions() as session:
        rows = [
            (s.email, s.status.value, s.bounce_count)
            for s in session.scalars(select(Subscriber).order_by(Subscriber.id))
        ]
        audit = len(list(session.scalars(select(AuditEntry))))
    return rows, audit


def audit(rt: Wiring) -> list[AuditEntry]:
    with rt.sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def status_of(rt: Wiring, subscriber_id: int) -> SubscriberStatus:
    with rt.sessions() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        return subscriber.status


# --- access -----------------------------------------------------------------------------------


GETS = (
    "/ops/subscribers",
    "/ops/subscribers?q=ada&status=active&page=2",
    "/ops/subscribers/1",
    "/ops/subscribers/export.csv",
    "/ops/subscribers/export.csv?status=suppressed",
    "/ops/subscribers/suppressed.csv",
)
POSTS = (
    "/ops/subscribers/1/suppress",
    "/ops/subscribers/1/unsuppress",
    "/ops/subscribers/1/test-send",
    "/ops/subscribers/import",
    "/ops/subscribers/import/confirm",
)


def test_every_page_and_action_needs_the_ops_sign_in(rt: Wiring, client: TestClient) -> None:
    add(rt, "ada@example.org")
    for path in GETS:
        assert client.get(path).status_code == 401, path
        assert client.get(path, auth=("ops", "wrong")).status_code == 401, path
    for path in POSTS:
        assert client.post(path, data={"reason": "x"}).status_code == 401, path
    assert status_of(rt, 1) is SubscriberStatus.ACTIVE


def test_production_without_a_password_serves_no_desk(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, ops_password=None)
    rt.settings = rt.settings.model_copy(update={"environment": "production"})
    client = make_client(rt)
    assert client.get("/ops/subscribers").status_code == 503
    assert client.get("/ops/subscribers/export.csv").status_code == 503


def test_get_changes_nothing(rt: Wiring, client: TestClient) -> None:
    ada = add(rt, "ada@example.org", status=SubscriberStatus.SUPPRESSED)
    before = state(rt)
    for path in (*GETS, f"/ops/subscribers/{ada}", f"/ops/subscribers/{ada}?done=suppressed"):
        assert client.get(path, auth=AUTH).status_code == 200, path
    # The forms' actions, asked for with GET: not routes, nothing done.
    for path in POSTS:
        assert client.get(path, auth=AUTH).status_code in (404, 405), path
    assert state(rt) == before
    assert rt.redis.keys(desk_csv.IMPORT_PREFIX + "*") == []


def test_the_pages_are_not_cached_and_run_under_the_dashboards_csp(
    rt: Wiring, client: TestClient
) -> None:
    ada = add(rt, "ada@example.org")
    for path in ("/ops/subscribers", f"/ops/subscribers/{ada}"):
        response = client.get(path, auth=AUTH)
        assert response.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "<script" not in response.text and " style=" not in response.text
    css = client.get("/ops/desk.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_an_unknown_subscriber_is_a_404(client: TestClient) -> None:
    assert client.get("/ops/subscribers/999", auth=AUTH).status_code == 404
    assert client.get("/ops/subscribers/not-a-number", auth=AUTH).status_code == 404


# --- CSRF -------------------------------------------------------------------------------------


def test_an_action_without_a_valid_token_changes_nothing(rt: Wiring, client: TestClient) -> None:
    ada = add(rt, "ada@example.org")
    before = state(rt)
    for data in ({"reason": "spam"}, {"reason": "spam", "csrf_token": "forged"}):
        response = client.post(f"/ops/subscribers/{ada}/suppress", data=data, auth=AUTH)
        assert response.status_code == 403
        assert "nothing was done" in response.text
    response = client.post(
        "/ops/subscribers/import",
        data={"csrf_token": "forged"},
        files={"file": ("a.csv", b"email\nnew@example.org\n", "text/csv")},
        auth=AUTH,
    )
    assert response.status_code == 403
    assert state(rt) == before
    assert rt.redis.keys(desk_csv.IMPORT_PREFIX + "*") == []


def test_a_cross_site_post_or_download_is_refused_even_with_a_token(
    rt: Wiring, client: TestClient
) -> None:
    ada = add(rt, "ada@example.org")
    response = client.post(
        f"/ops/subscribers/{ada}/suppress",
        data={"csrf_token": token(client), "reason": "spam"},
        auth=AUTH,
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403
    assert status_of(rt, ada) is SubscriberStatus.ACTIVE
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert client.get("/ops/subscribers/export.csv", auth=AUTH, headers=cross).status_code == 403
    assert (
        client.get("/ops/subscribers/suppressed.csv", auth=AUTH, headers=cross).status_code == 403
    )


# --- search -----------------------------------------------------------------------------------


def test_search_by_address_and_status_with_pages(rt: Wiring, client: TestClient) -> None:
    for n in range(55):
        add(rt, f"reader{n:02d}@lab.example.org")
    add(rt, "other@example.net", status=SubscriberStatus.SUPPRESSED)

    first = client.get("/ops/subscribers?q=LAB.EXAMPLE", auth=AUTH).text
    assert "55 found · page 1 of 2" in first
    assert "reader00@lab.example.org" in first and "reader50@lab.example.org" not in first
    assert 'href="/ops/subscribers?q=LAB.EXAMPLE&amp;page=2"' in first
    second = client.get("/ops/subscribers?q=LAB.EXAMPLE&page=2", auth=AUTH).text
    assert "reader50@lab.example.org" in second and "other@example.net" not in second

    suppressed = client.get("/ops/subscribers?status=suppressed", auth=AUTH).text
    assert "1 found" in suppressed and "other@example.net" in suppressed
    # Nonsense in the query string is ignored, not an error.
    assert client.get("/ops/subscribers?status=bogus&page=-3", auth=AUTH).status_code == 200


# --- suppress and unsuppress ------------------------------------------------------------------


def test_suppress_with_a_reason_then_see_it_in_the_history(rt: Wiring, client: TestClient) -> None:
    ada = add(rt, "ada@example.org")
    with rt.sessions() as session:
        edition = seed_edition(session, day=dt.date(2026, 12, 1))
        subscriber = session.get(Subscriber, ada)
        seed_delivery(
            session, edition=edition, subscriber=subscriber, status=DeliveryStatus.PENDING
        )
        session.commit()

    response = client.post(
        f"/ops/subscribers/{ada}/suppress",
        data={"csrf_token": token(client), "reason": "spam complaint"},
        auth=AUTH,
    )

    assert response.status_code == 303
    assert response.headers["location"] == f"/ops/subscribers/{ada}?done=suppressed"
    page = client.get(response.headers["location"], auth=AUTH).text
    assert "Suppressed: nothing more is mailed" in page
    assert re.search(r"suppressed \(was active\)</td><td>ops</td><td>spam complaint</td>", page)
    assert status_of(rt, ada) is SubscriberStatus.SUPPRESSED
    [entry] = audit(rt)
    assert (entry.actor, entry.action, entry.reason) == ("ops", "suppress", "spam complaint")
    assert "Unsuppress" in page and "makes it\n      <strong>active</strong>" in page


def test_suppress_without_a_reason_is_refused_and_says_why(rt: Wiring, client: TestClient) -> None:
    ada = add(rt, "ada@example.org")
    response = client.post(
        f"/ops/subscribers/{ada}/suppress",
        data={"csrf_token": token(client), "reason": "   "},
        auth=AUTH,
    )
    assert response.status_code == 400
    assert "Give a reason" in response.text
    assert status_of(rt, ada) is SubscriberStatus.ACTIVE and audit(rt) == []


def test_unsuppress_goes_back_to_what_it_was_and_never_reactivates_a_leaver(
    rt: Wiring, client: TestClient
) -> None:
    ada = add(rt, "ada@example.org")
    left = add(rt, "left@example.org", status=SubscriberStatus.UNSUBSCRIBED)
    csrf_token = token(client)
    for who in (ada, left):
        client.post(
            f"/ops/subscribers/{who}/suppress",
            data={"csrf_token": csrf_token, "reason": "check"},
            auth=AUTH,
        )

    back = client.post(
        f"/ops/subscribers/{ada}/unsuppress",
        data={"csrf_token": csrf_token, "reason": "checked"},
        auth=AUTH,
    )
    assert back.headers["location"] == f"/ops/subscribers/{ada}?done=unsuppressed-active"
    assert status_of(rt, ada) is SubscriberStatus.ACTIVE
    stays = client.post(
        f"/ops/subscribers/{left}/unsuppress",
        data={"csrf_token": csrf_token, "reason": "checked"},
        auth=AUTH,
    )
    assert stays.headers["location"].endswith("done=unsuppressed-unsubscribed")
    assert status_of(rt, left) is SubscriberStatus.UNSUBSCRIBED
    again = client.post(
        f"/ops/subscribers/{ada}/unsuppress",
        data={"csrf_token": csrf_token, "reason": "again"},
        auth=AUTH,
    )
    assert again.status_code == 409 and "is not suppressed" in again.text


# --- escaping ---------------------------------------------------------------------------------


def test_a_hostile_address_and_reason_are_shown_escaped_everywhere(
    rt: Wiring, client: TestClient
) -> None:
    bad = add(rt, HOSTILE_ADDRESS)
    client.post(
        f"/ops/subscribers/{bad}/suppress",
        data={"csrf_token": token(client), "reason": HOSTILE_REASON},
        auth=AUTH,
    )
    with rt.sessions() as session:
        edition = seed_edition(session, day=dt.date(2026, 12, 1))
        seed_delivery(
            session,
            edition=edition,
            subscriber=session.get(Subscriber, bad),
            status=DeliveryStatus.FAILED,
            last_error=f"bounced: 550 {HOSTILE}",
        )
        session.commit()

    for path in ("/ops/subscribers", f"/ops/subscribers/{bad}", "/ops/subscribers?q=img"):
        page = client.get(path, auth=AUTH).text
        assert "<img src=x" not in page and "<script>alert" not in page, path
        assert "&lt;img src=x onerror=alert(1)&gt;@example.org" in page, path
    page = client.get(f"/ops/subscribers/{bad}", auth=AUTH).text
    assert "&lt;script&gt;alert(&#34;reason&#34;)&lt;/script&gt;[red]x[/red]" in page
    # Echoed back into the form after a refusal: escaped inside the attribute too.
    refused = client.post(
        f"/ops/subscribers/{bad}/test-send",
        data={"csrf_token": token(client), "to": HOSTILE, "edition": "x"},
        auth=AUTH,
    )
    assert refused.status_code == 400
    assert "<img src=x" not in refused.text and "&#34;&gt;&lt;img" in refused.text


def test_a_done_notice_only_ever_echoes_digits(client: TestClient) -> None:
    page = client.get("/ops/subscribers?done=imported&n=<b>x</b>&skipped=3", auth=AUTH).text
    assert "Imported ? subscribers; 3 skipped." in page
    assert "<b>x</b>" not in page and "&lt;b&gt;" not in page


# --- export -----------------------------------------------------------------------------------


def test_export_downloads_a_csv_safe_to_open_in_a_spreadsheet(
    rt: Wiring, client: TestClient
) -> None:
    ada = add(rt, "ada@example.org")
    with rt.sessions() as session:
        subscriber = session.get(Subscriber, ada)
        assert subscriber is not None
        subscriber.topics = ['=HYPERLINK("http://evil.example","x")']
        session.commit()
    add(rt, "gone@example.org", status=SubscriberStatus.SUPPRESSED)

    response = client.get("/ops/subscribers/export.csv?status=active", auth=AUTH)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith(
        'attachment; filename="subscribers-active-'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["email"] for r in rows] == ["ada@example.org"]
    assert rows[0]["topics"] == '\'=HYPERLINK("http://evil.example","x")'
    listed = client.get("/ops/subscribers/suppressed.csv", auth=AUTH)
    assert [r["email"] for r in csv.DictReader(io.StringIO(listed.text))] == ["gone@example.org"]


# --- import -----------------------------------------------------------------------------------


def upload(client: TestClient, data: bytes, **fields: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/ops/subscribers/import",
        data={"csrf_token": token(client), **fields},
        files={"file": ("list.csv", data, "text/csv")},
        auth=AUTH,
    )


def test_an_import_is_previewed_then_confirmed_and_emails_confirmations(
    rt: Wiring, client: TestClient
) -> None:
    add(rt, "known@example.org")
    data = b"email,topics\nnew@example.org,robots\nknown@example.org,\nother@example.org,\n"

    preview = upload(client, data)

    assert preview.status_code == 200
    assert re.search(r'id="count-added">2<', preview.text)
    assert "Already subscribed (active)" in preview.text
    assert state(rt)[0] == [("known@example.org", "active", 0)]  # nothing changed yet
    [key] = rt.redis.keys(desk_csv.IMPORT_PREFIX + "*")
    assert 0 < rt.redis.ttl(key) <= desk_csv.IMPORT_TTL_SECONDS
    form_key = re.search(r'name="key" value="([^"]+)"', preview.text)
    assert form_key is not None

    done = client.post(
        "/ops/subscribers/import/confirm",
        data={"csrf_token": token_from(preview.text), "key": form_key[1]},
        auth=AUTH,
    )

    assert done.status_code == 303
    assert done.headers["location"] == (
        "/ops/subscribers?done=imported-pending&emailed=2&n=2&skipped=1"
    )
    assert "Imported 2 subscribers as pending; 1 skipped. 2 confirmation" in (
        client.get(done.headers["location"], auth=AUTH).text
    )
    statuses = {row[0]: row[1] for row in state(rt)[0]}
    assert statuses == {
        "known@example.org": "active",
        "new@example.org": "pending",
        "other@example.org": "pending",
    }
    backend = rt.backend
    assert isinstance(backend, MemoryBackend)
    assert sorted(backend.recipients) == ["new@example.org", "other@example.org"]
    assert [(e.actor, e.action) for e in audit(rt)] == [("ops", "import"), ("ops", "import")]
    assert rt.redis.keys(desk_csv.IMPORT_PREFIX + "*") == []  # used, and gone
    again = client.post(
        "/ops/subscribers/import/confirm",
        data={"csrf_token": token_from(preview.text), "key": form_key[1]},
        auth=AUTH,
    )
    assert again.status_code == 409 and "expired" in again.text


def test_an_active_import_needs_a_consent_source(rt: Wiring, client: TestClient) -> None:
    data = b"email\nnew@example.org\n"
    refused = upload(client, data, mode="active", consent_source="")
    assert refused.status_code == 400 and "consent source" in refused.text
    assert rt.redis.keys(desk_csv.IMPORT_PREFIX + "*") == []

    preview = upload(client, data, mode="active", consent_source="<b>open day</b> sheet")
    assert "&lt;b&gt;open day&lt;/b&gt; sheet" in preview.text
    key = re.search(r'name="key" value="([^"]+)"', preview.text)
    assert key is not None
    done = client.post(
        "/ops/subscribers/import/confirm",
        data={"csrf_token": token_from(preview.text), "key": key[1]},
        auth=AUTH,
    )
    assert done.headers["location"].startswith("/ops/subscribers?done=imported&")
    assert state(rt)[0] == [("new@example.org", "active", 0)]
    [entry] = audit(rt)
    assert entry.reason == "<b>open day</b> sheet"
    backend = rt.backend
    assert isinstance(backend, MemoryBackend) and backend.outbox == []


def test_an_import_with_row_errors_offers_nothing_to_confirm(
    rt: Wiring, client: TestClient
) -> None:
    preview = upload(client, b"email,frequency\nnew@example.org,hourly\n<b>@x,\n")
    assert preview.status_code == 200
    assert "Nothing can be imported" in preview.text
    assert "Choose daily or weekly." in preview.text and "<b>@x" not in preview.text
    assert "/import/confirm" not in preview.text
    assert rt.redis.keys(desk_csv.IMPORT_PREFIX + "*") == []


def test_an_unreadable_file_is_refused_in_words(client: TestClient) -> None:
    refused = upload(client, b"name\nada\n")
    assert refused.status_code == 400 and "no email column" in refused.text
    missing = client.post("/ops/subscribers/import", data={"csrf_token": token(client)}, auth=AUTH)
    assert missing.status_code == 400 and "Choose a CSV file" in missing.text


def test_a_kept_upload_is_only_for_the_operator_who_previewed_it(
    rt: Wiring, client: TestClient
) -> None:
    kept = {"operator": "someone-else", "active": False, "consent_source": "", "data": ""}
    rt.redis.set(desk_csv.IMPORT_PREFIX + "k", json.dumps(kept))
    response = client.post(
        "/ops/subscribers/import/confirm", data={"csrf_token": token(client), "key": "k"}, auth=AUTH
    )
    assert response.status_code == 409 and state(rt)[0] == []


def test_the_real_app_lets_an_upload_through_up_to_the_imports_own_limit(
    settings: Settings,
) -> None:
    web = make_web(settings)  # development, no password: /ops is open, with a banner
    with web.client:
        csrf_token = token_from(web.client.get("/ops/subscribers").text)
        big = b"email\n" + b"x" * imports.MAX_IMPORT_BYTES  # over the import's limit
        refused = web.client.post(
            "/ops/subscribers/import",
            data={"csrf_token": csrf_token},
            files={"file": ("big.csv", big, "text/csv")},
        )
        assert refused.status_code == 400
        assert "at most 1,000,000 bytes" in refused.text
        huge = b"email\n" + b"x" * desk_csv.IMPORT_MAX_BODY
        assert (
            web.client.post(
                "/ops/subscribers/import",
                data={"csrf_token": csrf_token},
                files={"file": ("huge.csv", huge, "text/csv")},
            ).status_code
            == 413
        )
        # Every other form keeps the small cap.
        assert web.client.post("/ops/pause", data={"x": "y" * 70_000}).status_code == 413
        assert not sending_paused(web.runtime.redis)
    web.runtime.engine.dispose()


# --- test send --------------------------------------------------------------------------------


def test_a_test_send_from_the_page_and_its_rate_limit(rt: Wiring, client: TestClient) -> None:
    ada = add(rt, "ada@example.org")
    with rt.sessions() as session:
        seed_papers_edition(session)
        session.commit()
    backend = rt.backend
    assert isinstance(backend, MemoryBackend)
    csrf_token = token(client)

    for n in range(desk_routes.TEST_SEND_LIMIT):
        response = client.post(
            f"/ops/subscribers/{ada}/test-send",
            data={"csrf_token": csrf_token, "to": f"editor{n}@example.net"},
            auth=AUTH,
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == f"/ops/subscribers/{ada}?done=test-sent"

    limited = client.post(
        f"/ops/subscribers/{ada}/test-send",
        data={"csrf_token": csrf_token, "to": "one-more@example.net"},
        auth=AUTH,
    )

    assert limited.status_code == 429 and "At most 5 test sends in 10 minutes" in limited.text
    assert len(backend.outbox) == desk_routes.TEST_SEND_LIMIT
    message = email.message_from_bytes(backend.outbox[0].data, policy=policy.default)
    assert str(message["Subject"]).startswith("[test] ")
    assert message["To"] == "editor0@example.net"
    page = client.get(f"/ops/subscribers/{ada}", auth=AUTH).text
    assert "test digest sent to editor0@example.net" in page


def test_a_test_send_says_what_went_wrong(rt: Wiring, client: TestClient) -> None:
    ada = add(rt, "ada@example.org")
    csrf_token = token(client)
    no_edition = client.post(
        f"/ops/subscribers/{ada}/test-send",
        data={"csrf_token": csrf_token, "to": "editor@example.net"},
        auth=AUTH,
    )
    assert no_edition.status_code == 404 and "no edition yet" in no_edition.text
    bad_address = client.post(
        f"/ops/subscribers/{ada}/test-send",
        data={"csrf_token": csrf_token, "to": "not an address"},
        auth=AUTH,
    )
    assert bad_address.status_code == 400 and "Send it to an email address" in bad_address.text
    assert audit(rt) == []


def test_a_subscribers_page_lists_their_bounce_events_escaped(
    rt: Wiring, client: TestClient
) -> None:
    from papermail.bounces import events
    from papermail.db import session_scope
    from papermail.models import BounceKind, BounceSource

    sid = add(rt, "ada@example.org")
    with session_scope(rt.sessions) as session:
        events.store(
            session,
            kind=BounceKind.HARD,
            source=BounceSource.SMTP,
            subscriber_id=sid,
            delivery_id=None,
            recipient="ada@example.org",
            status="5.1.1",
            diagnostic=HOSTILE_REASON,
            message="m1",
            now=dt.datetime(2026, 11, 26, 7, tzinfo=dt.UTC),
        )
    page = client.get(f"/ops/subscribers/{sid}", auth=AUTH).text
    assert 'id="bounce-events"' in page and "5.1.1" in page and ">hard<" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(" in page
