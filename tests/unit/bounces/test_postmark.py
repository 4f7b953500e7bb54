"""Postmark's webhooks: basic auth compared in constant time, and its record types."""

from __future__ import annotations

import base64
import json

import pytest

from papermail.bounces import postmark
from papermail.bounces.reports import Refused
from papermail.models import BounceKind


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (basic("postmark", "s3cret-webhook-password"), True),
        ("basic " + basic("postmark", "s3cret-webhook-password").split()[1], True),
        (basic("postmark", "s3cret-webhook-passwore"), False),
        (basic("postmark", "s3cret-webhook-password-and-more"), False),
        (basic("postmar", "k:s3cret-webhook-password"), False),
        (basic("admin", "s3cret-webhook-password"), False),
        ("Bearer s3cret-webhook-password", False),
        ("Basic not-base64!", False),
        ("Basic", False),
        ("", False),
        (None, False),
    ],
)
def test_only_the_configured_credentials_are_authorized(header: str | None, ok: bool) -> None:
    assert (
        postmark.authorized(header, username="postmark", password="s3cret-webhook-password") is ok
    )


def hook(**fields: object) -> bytes:
    event = {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "Ada@Example.org",
        "From": "digest@papers.example.org",
        "BouncedAt": "2026-11-26T07:00:21.9070259Z",
        "Inactive": True,
        "Subject": "papermail daily papers",
    }
    return json.dumps(event | fields).encode()


def test_a_hard_bounce() -> None:
    [report] = postmark.reports(hook())

    assert (report.kind, report.recipient, report.status) == (
        BounceKind.HARD,
        "ada@example.org",
        "5.1.1",
    )
    assert report.reference == "postmark:4323372036854775807"
    assert report.diagnostic and report.diagnostic.startswith("HardBounce: smtp;550 5.1.1")


def test_a_soft_bounce_keeps_only_a_status_that_agrees() -> None:
    [report] = postmark.reports(hook(Type="SoftBounce", TypeCode=4096))

    assert report.kind is BounceKind.SOFT and report.status is None  # "5.1.1" contradicts it


def test_a_spam_complaint() -> None:
    [report] = postmark.reports(
        hook(RecordType="SpamComplaint", Type="SpamComplaint", TypeCode=100001, ID=42)
    )

    assert (report.kind, report.reference) == (BounceKind.COMPLAINT, "postmark:42")


def test_our_message_id_is_read_from_the_quoted_content() -> None:
    content = "Received: ...\r\nMessage-ID: <papermail.e3.d17@papers.example.org>\r\n\r\nhi"

    [report] = postmark.reports(hook(Content=content))

    assert report.message_id == "<papermail.e3.d17@papers.example.org>"


@pytest.mark.parametrize(
    "kind", ["AutoResponder", "Subscribe", "Unsubscribe", "ManuallyDeactivated"]
)
def test_bounce_records_that_are_no_bounce_report_nothing(kind: str) -> None:
    assert postmark.reports(hook(Type=kind)) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        hook(RecordType="Delivery"),
        hook(Email=""),
        hook(ID=None),
        b"{" + b" " * (postmark.MAX_BODY + 1) + b"}",
    ],
)
def test_what_is_not_a_bounce_webhook_is_refused(raw: bytes) -> None:
    with pytest.raises(Refused):
        postmark.reports(raw)
