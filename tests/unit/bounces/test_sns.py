"""SNS signatures, checked before anything in a message is believed: a locally made key
and certificate, served through an httpx.MockTransport."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from papermail.bounces import sns
from papermail.bounces.reports import Refused
from papermail.models import BounceKind
from tests.unit.bounces.sns_support import (
    CERT_URL,
    SUBSCRIBE_URL,
    TOPIC,
    FakeSns,
    body,
    make_cert,
    make_key,
    ses_bounce,
    ses_complaint,
)

NOW = dt.datetime(2026, 11, 26, 7, 1, tzinfo=dt.UTC)
TOPICS = frozenset({TOPIC})


@pytest.fixture(scope="module")
def key():  # type: ignore[no-untyped-def]
    return make_key()


@pytest.fixture
def fake(key) -> FakeSns:  # type: ignore[no-untyped-def]
    return FakeSns(key=key, cert_pem=make_cert(key, start=NOW - dt.timedelta(days=30)))


@pytest.fixture
def certs(fake: FakeSns) -> Iterator[sns.SigningCerts]:
    with fake.client() as client:
        yield sns.SigningCerts(client, clock=lambda: NOW)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_notification_verifies_with_either_signature_version(
    fake: FakeSns, certs: sns.SigningCerts, version: str
) -> None:
    envelope = fake.notification(ses_bounce("ada@example.org"), at=NOW, version=version)

    message = sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)

    assert (message.type, message.topic_arn) == ("Notification", TOPIC)
    assert fake.requests == [CERT_URL]


def test_the_certificate_is_fetched_once_and_kept(fake: FakeSns, certs: sns.SigningCerts) -> None:
    for n in range(3):
        envelope = fake.notification(ses_bounce(f"r{n}@example.org"), at=NOW)
        sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)

    assert certs.fetches == 1 and fake.requests == [CERT_URL]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param({"Message": '{"notificationType": "Complaint"}'}, id="message"),
        pytest.param({"Subject": "changed"}, id="subject"),
        pytest.param({"Signature": "AAAA"}, id="signature"),
        pytest.param({"Signature": "not base64!"}, id="signature-not-base64"),
        pytest.param({"SignatureVersion": "2"}, id="version-swapped"),
    ],
)
def test_a_wrong_signature_is_refused(fake: FakeSns, certs: sns.SigningCerts, tamper) -> None:  # type: ignore[no-untyped-def]
    envelope = fake.notification(ses_bounce("ada@example.org"), at=NOW) | tamper

    with pytest.raises(Refused, match="bad SNS signature"):
        sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)


def test_a_signature_by_another_key_is_refused(fake: FakeSns, certs: sns.SigningCerts) -> None:
    forger = FakeSns(key=make_key(), cert_pem=b"")
    envelope = forger.notification(ses_bounce("ada@example.org"), at=NOW)

    with pytest.raises(Refused, match="bad SNS signature"):
        sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/SimpleNotificationService.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
        "https://s3.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
    ],
)
def test_a_certificate_anywhere_but_sns_over_https_is_refused_unfetched(
    fake: FakeSns, certs: sns.SigningCerts, url: str
) -> None:
    envelope = fake.notification(ses_bounce("ada@example.org"), at=NOW, SigningCertURL=url)

    with pytest.raises(Refused, match="SigningCertURL"):
        sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)
    assert fake.requests == []


def test_another_accounts_topic_is_refused_before_any_fetch(
    fake: FakeSns, certs: sns.SigningCerts
) -> None:
    envelope = fake.notification(
        ses_bounce("ada@example.org"), at=NOW, TopicArn="arn:aws:sns:eu-west-1:999:someone"
    )

    with pytest.raises(Refused, match="not one of ours"):
        sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)
    assert fake.requests == []


def test_an_old_message_is_refused_as_a_replay(fake: FakeSns, certs: sns.SigningCerts) -> None:
    envelope = fake.notification(ses_bounce("ada@example.org"), at=NOW - dt.timedelta(days=2))

    with pytest.raises(Refused, match="too old"):
        sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)


def test_an_expired_certificate_is_refused(key) -> None:  # type: ignore[no-untyped-def]
    fake = FakeSns(key=key, cert_pem=make_cert(key, start=NOW - dt.timedelta(days=400), days=30))
    with fake.client() as client:
        certs = sns.SigningCerts(client, clock=lambda: NOW)
        envelope = fake.notification(ses_bounce("ada@example.org"), at=NOW)

        with pytest.raises(Refused, match="out of date"):
            sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"Type": "Notification"}', b'{"Type": "Other", "TopicArn": "x"}'],
)
def test_what_is_not_an_sns_message_is_refused(certs: sns.SigningCerts, raw: bytes) -> None:
    with pytest.raises(Refused):
        sns.verify(raw, certs=certs, topics=TOPICS, now=NOW)


def test_a_subscription_is_confirmed_by_visiting_its_url_after_verification(
    fake: FakeSns, certs: sns.SigningCerts
) -> None:
    message = sns.verify(body(fake.subscription(at=NOW)), certs=certs, topics=TOPICS, now=NOW)
    sns.confirm_subscription(message, client=certs.client)

    assert fake.requests == [CERT_URL, SUBSCRIBE_URL]


def test_a_subscription_elsewhere_is_never_visited(fake: FakeSns, certs: sns.SigningCerts) -> None:
    envelope = fake.subscription(at=NOW, SubscribeURL="https://evil.example/?Action=Confirm")

    with pytest.raises(Refused, match="SubscribeURL"):
        sns.verify(body(envelope), certs=certs, topics=TOPICS, now=NOW)
    assert SUBSCRIBE_URL not in fake.requests


def _message(fake: FakeSns, certs: sns.SigningCerts, ses: dict) -> sns.SnsMessage:  # type: ignore[type-arg]
    return sns.verify(body(fake.notification(ses, at=NOW)), certs=certs, topics=TOPICS, now=NOW)


def test_ses_bounces_and_complaints_read_as_reports(fake: FakeSns, certs: sns.SigningCerts) -> None:
    [hard] = sns.reports(_message(fake, certs, ses_bounce("Ada@Example.org")))
    [soft] = sns.reports(
        _message(fake, certs, ses_bounce("ada@example.org", kind="Transient", status="4.2.2"))
    )
    [complaint] = sns.reports(_message(fake, certs, ses_complaint("ada@example.org")))

    assert (hard.kind, hard.recipient, hard.status) == (BounceKind.HARD, "ada@example.org", "5.1.1")
    assert hard.message_id == "<papermail.e1.d1@papers.example.org>"
    assert hard.reference == "ses:0100017a-bounce-1"
    assert (soft.kind, soft.status) == (BounceKind.SOFT, "4.2.2")
    assert (complaint.kind, complaint.recipient) == (BounceKind.COMPLAINT, "ada@example.org")


def test_ses_messages_that_are_no_bounce_read_as_nothing(
    fake: FakeSns, certs: sns.SigningCerts
) -> None:
    assert sns.reports(_message(fake, certs, {"notificationType": "Delivery"})) == []
    assert (
        sns.reports(_message(fake, certs, ses_complaint("a@example.org", feedback_type="not-spam")))
        == []
    )
    with pytest.raises(Refused, match="SES's JSON"):
        sns.reports(sns.SnsMessage("Notification", TOPIC, "not json", None))
