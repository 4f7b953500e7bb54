"""Amazon SES bounce and complaint notifications, delivered by SNS to POST /webhooks/ses.

Nothing in a notification is believed before its SNS signature is (AWS: "Verifying the
signatures of Amazon SNS messages"):

1. the body is a JSON object of at most ``MAX_BODY`` bytes with the fields its Type needs;
2. its TopicArn is one the operator configured (``PAPERMAIL_SES_TOPIC_ARNS``): SNS signs
   every topic's messages, anyone's included, so the signature alone proves nothing
   about whose topic it came from;
3. its SigningCertURL is https on ``sns.<region>.amazonaws.com`` and nothing else (no
   port, no user, a .pem path), fetched with TLS verification, at most ``MAX_CERT_BYTES``,
   and kept for ``CERT_TTL`` (one fetch per certificate, not per message);
4. the signature over the canonical string verifies with that certificate's RSA key:
   SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA; the certificate is in date;
5. its Timestamp is within ``MAX_AGE`` (a replay of an old message is refused; a replay
   of a recent one stores nothing new: the processor's dedup key).

Only then is a SubscriptionConfirmation's SubscribeURL visited (itself checked like the
certificate's URL), or a Notification's Message read as SES's JSON.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from papermail.bounces.events import status_in, trim
from papermail.bounces.reports import Refused, Report
from papermail.clock import Clock, utcnow
from papermail.models import BounceKind

MAX_BODY = 256 * 1024  # SNS messages are at most 256 KB
MAX_CERT_BYTES = 16 * 1024
CERT_TTL = dt.timedelta(hours=24)
MAX_AGE = dt.timedelta(hours=24)
MAX_CACHED_CERTS = 16
_SNS_HOST = re.compile(r"sns\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com")
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
SIGNED_KEYS = {
    "Notification": _NOTIFICATION_KEYS,
    "SubscriptionConfirmation": _SUBSCRIPTION_KEYS,
    "UnsubscribeConfirmation": _SUBSCRIPTION_KEYS,
}


class Unauthentic(Refused):
    """The message is not provably SNS's for one of our topics (signature, certificate,
    topic, age): refused, and a retry would not change that."""


class Unavailable(Refused):
    """The signing certificate could not be fetched: nothing is known yet; SNS should retry."""


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS message."""

    type: str
    topic_arn: str
    message: str
    subscribe_url: str | None


def check_amazon_url(url: str, *, what: str) -> str:
    """``url`` if it is https on sns.<region>.amazonaws.com with nothing unusual, else Refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Unauthentic(f"{what} is not a URL") from exc
    host = parts.hostname or ""
    if parts.scheme != "https" or not _SNS_HOST.fullmatch(host) or port not in (None, 443):
        raise Unauthentic(f"{what} is not https on sns.<region>.amazonaws.com: {trim(url, 120)}")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise Unauthentic(f"{what} carries credentials or a fragment")
    return url


class SigningCerts:
    """SNS signing certificates by URL, fetched once and kept ``ttl`` (bounded, thread-safe:
    the web app verifies in a thread pool)."""

    def __init__(
        self, client: httpx.Client, *, clock: Clock = utcnow, ttl: dt.timedelta = CERT_TTL
    ) -> None:
        self.client = client
        self.clock = clock
        self.ttl = ttl
        self.fetches = 0
        self._cache: OrderedDict[str, tuple[dt.datetime, x509.Certificate]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> x509.Certificate:
        check_amazon_url(url, what="SigningCertURL")
        now = self.clock()
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
        cert = self._fetch(url)
        with self._lock:
            self._cache[url] = (now, cert)
            self._cache.move_to_end(url)
            while len(self._cache) > MAX_CACHED_CERTS:
                self._cache.popitem(last=False)
        return cert

    def _fetch(self, url: str) -> x509.Certificate:
        self.fetches += 1
        try:
            with self.client.stream("GET", url, follow_redirects=False) as response:
                if response.status_code != 200:
                    raise Unavailable(f"signing certificate: HTTP {response.status_code}")
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_CERT_BYTES:
                        raise Unauthentic("signing certificate too large")
        except httpx.HTTPError as exc:
            raise Unavailable(f"signing certificate unreachable: {type(exc).__name__}") from exc
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise Unauthentic("signing certificate is not a PEM certificate") from exc


def verify(
    body: bytes, *, certs: SigningCerts, topics: frozenset[str], now: dt.datetime
) -> SnsMessage:
    """The SNS message in ``body``, verified (see the module's steps), or Refused."""
    envelope = _envelope(body)
    kind = envelope["Type"]
    if envelope["TopicArn"] not in topics:
        raise Unauthentic(f"topic {trim(envelope['TopicArn'], 200)} is not one of ours")
    _check_fresh(envelope["Timestamp"], now=now)
    algorithm = _HASHES.get(envelope.get("SignatureVersion", ""))
    if algorithm is None:
        raise Unauthentic(
            f"unknown SignatureVersion {trim(str(envelope.get('SignatureVersion')), 10)!r}"
        )
    cert = certs.get(envelope["SigningCertURL"])
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Unauthentic("signing certificate is out of date")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Unauthentic("signing certificate has no RSA key")
    try:
        signature = base64.b64decode(envelope["Signature"], validate=True)
        key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm())
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise Unauthentic("bad SNS signature") from exc
    subscribe_url = envelope.get("SubscribeURL")
    if kind == "SubscriptionConfirmation":
        check_amazon_url(str(subscribe_url), what="SubscribeURL")
    return SnsMessage(kind, envelope["TopicArn"], envelope["Message"], subscribe_url)


def string_to_sign(envelope: Mapping[str, str]) -> bytes:
    """The canonical "Key\\nValue\\n" lines SNS signs, for the message's Type."""
    keys = SIGNED_KEYS[envelope["Type"]]
    return "".join(f"{k}\n{envelope[k]}\n" for k in keys if k in envelope).encode("utf-8")


def confirm_subscription(message: SnsMessage, *, client: httpx.Client) -> None:
    """Visit a verified SubscriptionConfirmation's SubscribeURL (SNS then starts sending)."""
    url = check_amazon_url(str(message.subscribe_url), what="SubscribeURL")
    try:
        response = client.get(url, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise Refused(f"SubscribeURL unreachable: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise Refused(f"SubscribeURL answered HTTP {response.status_code}")


def reports(message: SnsMessage) -> list[Report]:
    """SES's bounce or complaint notification as reports ([] for deliveries and the like)."""
    try:
        ses = json.loads(message.message)
    except ValueError as exc:
        raise Refused("notification Message is not SES's JSON") from exc
    if not isinstance(ses, dict):
        raise Refused("notification Message is not SES's JSON")
    kind = ses.get("notificationType") or ses.get("eventType")
    message_id = _original_message_id(ses.get("mail"))
    if kind == "Bounce":
        return _bounces(_dict(ses.get("bounce")), message_id)
    if kind == "Complaint":
        return _complaints(_dict(ses.get("complaint")), message_id)
    return []


def _bounces(bounce: dict[str, Any], message_id: str | None) -> list[Report]:
    kind = BounceKind.HARD if bounce.get("bounceType") == "Permanent" else BounceKind.SOFT
    reference = f"ses:{trim(str(bounce.get('feedbackId') or ''), 200)}"
    found = []
    for recipient in _list(bounce.get("bouncedRecipients"))[:50]:
        diagnostic = str(recipient.get("diagnosticCode") or "")
        status = str(recipient.get("status") or "") or status_in(diagnostic)
        if status and status[0] != ("5" if kind is BounceKind.HARD else "4"):
            status = None  # contradicts SES's own classification, which wins
        found.append(
            Report(
                kind=kind,
                recipient=_address(recipient.get("emailAddress")),
                status=status or None,
                diagnostic=trim(diagnostic.split(";", 1)[-1])
                or trim(str(bounce.get("bounceSubType") or "")),
                message_id=message_id,
                reference=reference,
            )
        )
    return found


def _complaints(complaint: dict[str, Any], message_id: str | None) -> list[Report]:
    feedback = str(complaint.get("complaintFeedbackType") or "abuse")
    if feedback == "not-spam" or complaint.get("complaintSubType") == "OnAccountSuppressionList":
        return []  # not a reader's complaint
    return [
        Report(
            kind=BounceKind.COMPLAINT,
            recipient=_address(recipient.get("emailAddress")),
            diagnostic=trim(f"feedback-type {feedback}; {complaint.get('userAgent') or ''}"),
            message_id=message_id,
            reference=f"ses:{trim(str(complaint.get('feedbackId') or ''), 200)}",
        )
        for recipient in _list(complaint.get("complainedRecipients"))[:50]
    ]


def _envelope(body: bytes) -> dict[str, str]:
    if len(body) > MAX_BODY:
        raise Refused("SNS message too large")
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise Refused("not JSON") from exc
    if not isinstance(envelope, dict) or envelope.get("Type") not in SIGNED_KEYS:
        raise Refused("not an SNS message")
    needed = [k for k in SIGNED_KEYS[envelope["Type"]] if k != "Subject"]
    needed += ["Signature", "SigningCertURL"]
    if not all(isinstance(envelope.get(k), str) for k in needed):
        raise Refused(f"SNS {envelope['Type']} without its fields")
    if "Subject" in envelope and not isinstance(envelope["Subject"], str):
        raise Refused("SNS Subject is not text")
    return envelope


def _check_fresh(timestamp: str, *, now: dt.datetime) -> None:
    try:
        at = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Refused("SNS Timestamp unreadable") from exc
    if at.tzinfo is None or not now - MAX_AGE <= at <= now + dt.timedelta(minutes=5):
        raise Unauthentic("SNS message too old (or from the future): a replay?")


def _original_message_id(mail: object) -> str | None:
    common = _dict(_dict(mail).get("commonHeaders"))
    value = common.get("messageId")
    if not value:
        for header in _list(_dict(mail).get("headers")):
            if str(header.get("name", "")).lower() == "message-id":
                value = header.get("value")
    return trim(str(value), 255) if value else None


def _address(value: object) -> str | None:
    text = str(value or "").strip().strip("<>").lower()
    return text[:320] if "@" in text else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
