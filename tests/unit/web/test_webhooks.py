"""POST /webhooks/ses and /webhooks/postmark through the app: authenticated, thin, and a
replay stores nothing new."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from papermail.bounces import sns
from papermail.config import Settings
from papermail.db import session_scope
from papermail.models import BounceEvent, BounceKind, BounceSource, SubscriberStatus
from tests.support.web import NOW, Web, running_web
from tests.unit.bounces.conftest import add_delivery
from tests.unit.bounces.sns_support import (
    CERT_URL,
    SUBSCRIBE_URL,
    TOPIC,
    FakeSns,
    make_cert,
    make_key,
    ses_bounce,
    ses_complaint,
)

USER, PASSWORD = "postmark", "webhook-password-0123456789"
KEY = make_key()


@pytest.fixture
def web(settings: Settings) -> Iterator[Web]:
    configured = settings.model_copy(
        update={
            "ses_topic_arns": TOPIC,
            "postmark_webhook_username": USER,
            "postmark_webhook_password": SecretStr(PASSWORD),
        }
    )
    yield from running_web(configured)


@pytest.fixture
def fake_sns(web: Web) -> Iterator[FakeSns]:
    fake = FakeSns(key=KEY, cert_pem=make_cert(KEY, start=NOW.replace(year=2026, month=1)))
    with fake.client() as client:
        hooks = web.app.state.webhooks
        hooks.http, hooks.certs = client, sns.SigningCerts(client, clock=web.clock)
        yield fake


def _ada(web: Web) -> int:
    """ada@example.org, active, with delivery 1 (the Message-ID the payloads quote)."""
    subscriber = web.add("ada@example.org")
    with session_scope(web.runtime.sessions) as session:
        delivery = add_delivery(session, subscriber)
        assert delivery.id == 1
    return subscriber.id


def _events(web: Web) -> list[BounceEvent]:
    with web.runtime.sessions() as session:
        return list(session.scalars(select(BounceEvent).order_by(BounceEvent.id)))


def _status(web: Web, address: str = "ada@example.org") -> SubscriberStatus:
    subscriber = web.subscriber(address)
    assert subscriber is not None
    return subscriber.status


def _auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _postmark(**fields: object) -> dict[str, object]:
    return {
        "RecordType": "Bounce",
        "ID": 1001,
        "Type": "HardBounce",
        "Email": "ada@example.org",
        "Details": "smtp;550 5.1.1 user unknown",
        "BouncedAt": "2026-11-26T07:00:21Z",
    } | fields


# --- Postmark -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, _auth(password="wrong"), _auth(user="admin"), {"Authorization": "Bearer " + PASSWORD}],
)
def test_postmark_without_the_credentials_is_refused_and_changes_nothing(
    web: Web, headers: dict[str, str]
) -> None:
    _ada(web)

    response = web.client.post("/webhooks/postmark", json=_postmark(), headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert _events(web) == [] and _status(web) is SubscriberStatus.ACTIVE


def test_a_postmark_hard_bounce_suppresses_and_its_replay_stores_nothing(web: Web) -> None:
    _ada(web)

    first = web.client.post("/webhooks/postmark", json=_postmark(), headers=_auth())
    again = web.client.post("/webhooks/postmark", json=_postmark(), headers=_auth())

    assert first.status_code == again.status_code == 200
    assert first.json() == {"status": "ok", "stored": 1, "duplicates": 0, "refused": []}
    assert again.json()["duplicates"] == 1
    [event] = _events(web)
    assert (event.kind, event.source, event.status) == (
        BounceKind.HARD,
        BounceSource.POSTMARK,
        "5.1.1",
    )
    assert _status(web) is SubscriberStatus.SUPPRESSED


def test_a_postmark_spam_complaint_unsubscribes(web: Web) -> None:
    _ada(web)

    response = web.client.post(
        "/webhooks/postmark",
        json=_postmark(RecordType="SpamComplaint", Type="SpamComplaint", ID=77),
        headers=_auth(),
    )

    assert response.status_code == 200
    subscriber = web.subscriber("ada@example.org")
    assert subscriber is not None
    assert subscriber.status is SubscriberStatus.SUPPRESSED
    assert subscriber.unsubscribed_at is not None


def test_a_postmark_bounce_for_an_unknown_address_is_taken_and_ignored(web: Web) -> None:
    response = web.client.post(
        "/webhooks/postmark", json=_postmark(Email="john@example.com"), headers=_auth()
    )

    assert response.status_code == 200  # Postmark's test button: no retries for it
    assert response.json()["refused"] == ["no subscriber with that address"]


def test_a_postmark_body_that_is_no_webhook_is_a_400(web: Web) -> None:
    response = web.client.post("/webhooks/postmark", content=b"not json", headers=_auth())

    assert response.status_code == 400


def test_unconfigured_webhooks_are_not_found(settings: Settings) -> None:
    for made in running_web(settings):
        assert (
            made.client.post("/webhooks/postmark", json=_postmark(), headers=_auth()).status_code
            == 404
        )
        assert made.client.post("/webhooks/ses", content=b"{}").status_code == 404


# --- SES through SNS ------------------------------------------------------------------------


def _sns(web: Web, envelope: dict[str, str]):  # type: ignore[no-untyped-def]
    return web.client.post(
        "/webhooks/ses",
        content=json.dumps(envelope),
        headers={
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": envelope["Type"],
        },
    )


def test_an_sns_subscription_is_confirmed_only_once_verified(web: Web, fake_sns: FakeSns) -> None:
    forged = fake_sns.subscription(at=NOW) | {"Token": "forged"}

    refused = _sns(web, forged)
    assert refused.status_code == 403 and SUBSCRIBE_URL not in fake_sns.requests

    confirmed = _sns(web, fake_sns.subscription(at=NOW))
    assert confirmed.status_code == 200 and confirmed.json() == {"status": "subscribed"}
    assert fake_sns.requests[-1] == SUBSCRIBE_URL


def test_an_ses_bounce_is_taken_once_and_its_replay_stores_nothing(
    web: Web, fake_sns: FakeSns
) -> None:
    _ada(web)
    envelope = fake_sns.notification(ses_bounce("ada@example.org"), at=NOW, version="2")

    first, again = _sns(web, envelope), _sns(web, envelope)

    assert first.json()["stored"] == 1 and again.json()["duplicates"] == 1
    [event] = _events(web)
    assert (event.source, event.delivery_id, event.kind) == (BounceSource.SES, 1, BounceKind.HARD)
    assert _status(web) is SubscriberStatus.SUPPRESSED
    assert fake_sns.requests.count(CERT_URL) == 1


def test_an_ses_complaint_unsubscribes(web: Web, fake_sns: FakeSns) -> None:
    _ada(web)

    response = _sns(web, fake_sns.notification(ses_complaint("ada@example.org"), at=NOW))

    assert response.json()["stored"] == 1
    assert _status(web) is SubscriberStatus.SUPPRESSED


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            {"Message": json.dumps(ses_complaint("ada@example.org"))}, id="wrong-signature"
        ),
        pytest.param({"SigningCertURL": "https://evil.example/cert.pem"}, id="wrong-cert-host"),
        pytest.param({"TopicArn": "arn:aws:sns:eu-west-1:999:theirs"}, id="foreign-topic"),
    ],
)
def test_an_ses_notification_that_does_not_check_out_changes_nothing(
    web: Web, fake_sns: FakeSns, tamper: dict[str, str]
) -> None:
    _ada(web)
    envelope = fake_sns.notification(ses_bounce("ada@example.org"), at=NOW) | tamper

    response = _sns(web, envelope)

    assert response.status_code == 403 and response.json()["status"] == "refused"
    assert _events(web) == [] and _status(web) is SubscriberStatus.ACTIVE
    with web.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BounceEvent)) == 0


def test_an_unreachable_certificate_asks_sns_to_retry(web: Web, fake_sns: FakeSns) -> None:
    fake_sns.cert_pem = b""
    hooks = web.app.state.webhooks
    broken = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    hooks.certs = sns.SigningCerts(broken, clock=web.clock)

    response = _sns(web, fake_sns.notification(ses_bounce("ada@example.org"), at=NOW))

    assert response.status_code == 503  # SNS retries; nothing was decided
    broken.close()


def test_what_is_not_an_sns_message_is_a_400(web: Web, fake_sns: FakeSns) -> None:
    assert web.client.post("/webhooks/ses", content=b"not json").status_code == 400
    assert web.client.post("/webhooks/ses", json={"Type": "Notification"}).status_code == 400


def test_a_postmark_webhook_carrying_the_bounced_message_is_not_refused_for_size(
    web: Web,
) -> None:
    # "Include message content": well over the 64 KB other routes take.
    _ada(web)
    body = _postmark(Content="x" * 200_000)
    response = web.client.post("/webhooks/postmark", json=body, headers=_auth())
    assert response.status_code == 200
    assert [e.kind for e in _events(web)] == ["hard"]
    assert web.client.post("/webhooks/postmark", content=b"x" * 600_000).status_code == 413
