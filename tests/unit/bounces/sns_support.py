"""A stand-in for Amazon SNS: a locally made key and certificate, signed messages, and an
httpx.MockTransport serving the certificate (never the network). No tests here."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from papermail.bounces.sns import string_to_sign

TOPIC = "arn:aws:sns:eu-west-1:123456789012:papermail-ses"
CERT_URL = (
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
)
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    + TOPIC
    + "&Token=2336412f37fb687f5d51e6e2425c464de12884a7"
)


def make_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(key: rsa.RSAPrivateKey, *, start: dt.datetime, days: int = 400) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeSns:
    """Signs messages like SNS and answers for its certificate and SubscribeURLs."""

    key: rsa.RSAPrivateKey
    cert_pem: bytes
    requests: list[str] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        if request.url.path.endswith(".pem"):
            return httpx.Response(200, content=self.cert_pem)
        if request.url.params.get("Action") == "ConfirmSubscription":
            return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    def sign(self, envelope: dict[str, str], *, version: str = "1") -> dict[str, str]:
        envelope = {**envelope, "SignatureVersion": version}
        # SNS SignatureVersion 1 is SHA1withRSA: what SNS sends, so what must verify.
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(string_to_sign(envelope), padding.PKCS1v15(), algorithm)
        return {**envelope, "Signature": base64.b64encode(signature).decode("ascii")}

    def notification(
        self, message: dict[str, Any], *, at: dt.datetime, version: str = "1", **fields: str
    ) -> dict[str, str]:
        return self.sign(
            {
                "Type": "Notification",
                "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
                "TopicArn": TOPIC,
                "Subject": "Amazon SES Email Event Notification",
                "Message": json.dumps(message),
                "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "SigningCertURL": CERT_URL,
                "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
                **fields,
            },
            version=version,
        )

    def subscription(self, *, at: dt.datetime, **fields: str) -> dict[str, str]:
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
                "Token": "2336412f37fb687f5d51e6e2425c464de12884a7",
                "TopicArn": TOPIC,
                "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
                "SubscribeURL": SUBSCRIBE_URL,
                "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "SigningCertURL": CERT_URL,
                **fields,
            }
        )


def ses_bounce(
    address: str,
    *,
    kind: str = "Permanent",
    status: str = "5.1.1",
    message_id: str = "<papermail.e1.d1@papers.example.org>",
    feedback_id: str = "0100017a-bounce-1",
) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": status,
                    "diagnosticCode": f"smtp; 550 {status} {address}... User unknown",
                }
            ],
            "timestamp": "2026-11-26T07:00:21.000Z",
            "feedbackId": feedback_id,
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
        "mail": {
            "timestamp": "2026-11-26T07:00:19.000Z",
            "source": "digest@papers.example.org",
            "messageId": "0100017a-ses-own-id",
            "destination": [address],
            "commonHeaders": {"messageId": message_id, "subject": "papermail daily papers"},
        },
    }


def ses_complaint(address: str, *, feedback_type: str = "abuse") -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": address}],
            "timestamp": "2026-11-26T09:14:02.000Z",
            "feedbackId": "0100017a-complaint-1",
            "complaintFeedbackType": feedback_type,
            "userAgent": "ExampleMail-Feedback/2.0",
        },
        "mail": {"messageId": "0100017a-ses-own-id", "commonHeaders": {}},
    }


Body = Callable[[dict[str, str]], bytes]


def body(envelope: dict[str, str]) -> bytes:
    return json.dumps(envelope).encode()
