"""Postmark bounce and spam-complaint webhooks, POSTed to /webhooks/postmark.

Postmark signs nothing: the webhook URL carries HTTP basic auth credentials the operator
sets in Postmark and in ``PAPERMAIL_POSTMARK_WEBHOOK_USERNAME`` / ``_PASSWORD``, compared
in constant time. A replayed webhook stores nothing new (the event's dedup key).

Postmark's bounce types, as papermail reads them: HardBounce and BadEmailAddress are
hard; Transient, SoftBounce, DnsError, Blocked and DMARCPolicy soft; a SpamComplaint
(its RecordType or Type) a complaint; the rest (auto-replies, subscribe and unsubscribe
requests, challenge-response, manual deactivation, ...) are no bounce and change nothing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Any

from papermail.bounces.events import status_in, trim
from papermail.bounces.reports import OUR_MESSAGE_ID, Refused, Report
from papermail.models import BounceKind

MAX_BODY = 256 * 1024
HARD = frozenset({"HardBounce", "BadEmailAddress"})
SOFT = frozenset({"Transient", "SoftBounce", "DnsError", "Blocked", "DMARCPolicy"})
COMPLAINT = "SpamComplaint"


def authorized(header: str | None, *, username: str, password: str) -> bool:
    """Whether an Authorization header carries these basic auth credentials."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{username}:{password}".encode()
    # Both compared whole, in constant time: neither length nor prefix leaks.
    return hmac.compare_digest(given, expected)


def reports(body: bytes) -> list[Report]:
    """The report in one webhook body ([] when it is no bounce), or Refused."""
    if len(body) > MAX_BODY:
        raise Refused("Postmark webhook too large")
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise Refused("not JSON") from exc
    if not isinstance(event, dict):
        raise Refused("not a Postmark webhook")
    record_type, kind_name = str(event.get("RecordType") or ""), str(event.get("Type") or "")
    if COMPLAINT in (record_type, kind_name):
        kind = BounceKind.COMPLAINT
    elif record_type == "Bounce" and kind_name in HARD:
        kind = BounceKind.HARD
    elif record_type == "Bounce" and kind_name in SOFT:
        kind = BounceKind.SOFT
    elif record_type == "Bounce":
        return []
    else:
        raise Refused(f"Postmark record type {trim(record_type, 40)!r} is no bounce or complaint")
    address = str(event.get("Email") or "").strip().lower()
    if "@" not in address or event.get("ID") is None:
        raise Refused("Postmark webhook without Email or ID")
    details = str(event.get("Details") or event.get("Description") or "")
    status = status_in(details) if kind is not BounceKind.COMPLAINT else None
    if status and status[0] != ("5" if kind is BounceKind.HARD else "4"):
        status = None
    return [
        Report(
            kind=kind,
            recipient=address[:320],
            status=status,
            diagnostic=trim(f"{kind_name}: {details}"),
            message_id=_our_message_id(event),
            reference=f"postmark:{trim(str(event['ID']), 64)}",
        )
    ]


def _our_message_id(event: dict[str, Any]) -> str | None:
    """Our Message-ID, when the bounce's content (the original, quoted) shows it."""
    content = event.get("Content")
    match = OUR_MESSAGE_ID.search(content[:65536]) if isinstance(content, str) else None
    return match[0] if match else None
