"""Reading a raw bounce or complaint message into reports.

In order:

1. an ARF complaint (RFC 5965): a ``message/feedback-report`` part; Feedback-Type abuse,
   fraud or other is a complaint (not-spam and virus reports are not);
2. a DSN (RFC 3464): a ``message/delivery-status`` part, one report per recipient block
   whose Action is failed or delayed; Status 5.x.x is hard, 4.x.x soft;
3. anything else goes to flufl.bounce's scanners (Exim's and qmail's plain-text bounces,
   old Exchange, ...): permanent failures hard, temporary ones soft, with the first
   enhanced status code in the text if there is one.

The Message-ID of the message that bounced comes from the attached original
(``message/rfc822`` or ``text/rfc822-headers``), else from any of our Message-IDs quoted in
the text. VERP addresses a message was sent to (or, for a complaint, the Return-Path of
the original) are listed for the processor, which checks them.

Hostile input: a message over ``max_bytes`` is not parsed; at most ``MAX_PARTS`` MIME parts
and ``MAX_RECIPIENTS`` recipient blocks are read; every text is trimmed before it is kept.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.utils
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeGuard

from flufl.bounce import all_failures

from papermail.bounces.events import status_in, trim
from papermail.bounces.reports import OUR_MESSAGE_ID, Refused, Report, kind_of_status
from papermail.models import BounceKind

log = logging.getLogger(__name__)

MAX_PARTS = 64
MAX_RECIPIENTS = 50
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other"})
# Where a bounce shows the address it was sent to (the VERP address): the envelope, as
# the receiving server recorded it, then the header.
DELIVERED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_FAILING = frozenset({"failed", "delayed"})
_TEXT_SCAN = 64 * 1024  # characters of a plain-text bounce read for codes and Message-IDs
_ADDRESS = re.compile(r"[^\s<>;]+@[^\s<>;]+")
_WARNING_SUBJECT = re.compile(r"\b(warning|delayed|delay)\b", re.IGNORECASE)
_WARNING_TEXT = re.compile(
    r"not yet been delivered|this is a warning only|will (continue to )?be (retried|attempted)"
    r"|delivery attempts will continue",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ParsedBounce:
    reports: tuple[Report, ...]
    verp_addresses: tuple[str, ...]  # candidates; unverified
    form: str  # "arf", "dsn" or "heuristic": how it was read


def parse(raw: bytes, *, max_bytes: int) -> ParsedBounce:
    """The reports in one raw message, or Refused (too large, unreadable, not a bounce)."""
    if len(raw) > max_bytes:
        raise Refused(f"too large: {len(raw):,} bytes (the limit is {max_bytes:,})")
    try:
        message = email.message_from_bytes(raw)
        parts = list(_parts(message))
    except Refused:
        raise
    except Exception as exc:  # the email package on hostile input: anything
        raise Refused(f"unreadable message: {type(exc).__name__}") from exc
    addresses = _addresses_in(message, DELIVERED_TO)
    original = _original_headers(parts)
    message_id = _message_id(original, parts)
    for reader in (_arf, _dsn):
        found = reader(parts, message_id)
        if found is not None:
            reports, form = found
            if form == "arf" and original is not None:
                # A complaint goes to the feedback loop's address, not to the VERP address:
                # the original's Return-Path (and the report's Original-Mail-From) has it.
                addresses += _addresses_in(original, ("Return-Path",))
                addresses += _report_field(parts, "Original-Mail-From")
            return ParsedBounce(tuple(reports), addresses, form)
    return ParsedBounce(tuple(_heuristic(message, parts, message_id)), addresses, "heuristic")


def _parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """Every MIME part, depth first, not looking inside message/* parts (a delivery-status
    part's recipient blocks, an attached original are read where they are needed)."""
    stack, count = [message], 0
    while stack:
        part = stack.pop()
        count += 1
        if count > MAX_PARTS:
            raise Refused(f"too many MIME parts (more than {MAX_PARTS})")
        yield part
        if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
            stack.extend(reversed([p for p in part.get_payload() if _is_message(p)]))


def _arf(
    parts: list[email.message.Message], message_id: str | None
) -> tuple[list[Report], str] | None:
    fields = _report_block(parts, "message/feedback-report")
    if fields is None:
        return None
    feedback_type = (fields.get("Feedback-Type") or "").strip().lower()
    if feedback_type not in COMPLAINT_TYPES:
        raise Refused(f"feedback report of type {feedback_type or 'none'!r} is no complaint")
    recipient = _address(fields.get("Original-Rcpt-To"))
    report = Report(
        kind=BounceKind.COMPLAINT,
        recipient=recipient,
        diagnostic=trim(f"feedback-type {feedback_type}; {fields.get('User-Agent') or ''}"),
        message_id=message_id,
    )
    return [report], "arf"


def _dsn(
    parts: list[email.message.Message], message_id: str | None
) -> tuple[list[Report], str] | None:
    status_part = next(
        (p for p in parts if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        return None
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise Refused("delivery-status part without a recipient block")
    reports = []
    for block in blocks[1 : MAX_RECIPIENTS + 1]:
        report = _recipient_report(block, message_id) if _is_message(block) else None
        if report is not None:
            reports.append(report)
    if not reports:
        raise Refused("DSN reports no failure (delivered, relayed or expanded)")
    return reports, "dsn"


def _recipient_report(block: email.message.Message, message_id: str | None) -> Report | None:
    action = (str(block.get("Action") or "")).strip().lower()
    diagnostic = str(block.get("Diagnostic-Code") or "")
    status = _status(str(block.get("Status") or "")) or status_in(diagnostic)
    kind = kind_of_status(status)
    if action == "delayed":
        kind = BounceKind.SOFT
    elif action not in _FAILING:
        return None
    elif kind is None:  # failed without a usable status: permanent, by RFC 3464's words
        kind = BounceKind.HARD
    recipient = _address(block.get("Final-Recipient")) or _address(block.get("Original-Recipient"))
    # "smtp; 550 5.1.1 ..." -> "550 5.1.1 ..."
    words = diagnostic.split(";", 1)[-1] if ";" in diagnostic else diagnostic
    return Report(
        kind=kind, recipient=recipient, status=status, diagnostic=trim(words), message_id=message_id
    )


def _heuristic(
    message: email.message.Message, parts: list[email.message.Message], message_id: str | None
) -> list[Report]:
    try:
        temporary, permanent = all_failures(message)
    except Exception as exc:  # a detector tripping over odd input
        raise Refused(f"unreadable bounce: {type(exc).__name__}") from exc
    if not (temporary or permanent):
        raise Refused("no bounce or complaint found")
    text = _plain_text(parts)
    status = status_in(text)
    diagnostic = _line_with(text, status) if status else None
    if permanent and _warning(message, text, status):
        # flufl.bounce's generic matcher runs before its warning matcher and calls some
        # delay warnings permanent: a warning says it is not.
        temporary, permanent = temporary | permanent, frozenset()
    reports = []
    for kind, found in ((BounceKind.HARD, permanent), (BounceKind.SOFT, temporary)):
        for raw_address in sorted(found)[:MAX_RECIPIENTS]:
            address = (
                raw_address.decode("utf-8", "replace")
                if isinstance(raw_address, bytes)
                else str(raw_address)
            )
            # A status of the other class would contradict the scanner: keep only agreeing ones.
            agreeing = status if kind_of_status(status) is kind else None
            reports.append(
                Report(
                    kind=kind,
                    recipient=_address(address),
                    status=agreeing,
                    diagnostic=diagnostic,
                    message_id=message_id,
                )
            )
    return reports


# --- helpers --------------------------------------------------------------------------------


def _report_block(
    parts: list[email.message.Message], content_type: str
) -> email.message.Message | None:
    part = next((p for p in parts if p.get_content_type() == content_type), None)
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
        return payload[0]
    if isinstance(payload, str):
        return email.parser.HeaderParser().parsestr(payload.lstrip())
    raise Refused(f"unreadable {content_type} part")


def _report_field(parts: list[email.message.Message], name: str) -> tuple[str, ...]:
    block = _report_block(parts, "message/feedback-report")
    value = block.get(name) if block is not None else None
    return (str(value),) if value else ()


def _original_headers(parts: list[email.message.Message]) -> email.message.Message | None:
    """The headers of the message that bounced, when the report attaches them."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and _is_message(payload[0]):
                return payload[0]
        elif kind == "text/rfc822-headers":
            text = _decoded(part)
            if text:
                return email.parser.HeaderParser().parsestr(text.lstrip())
    return None


def _message_id(
    original: email.message.Message | None, parts: list[email.message.Message]
) -> str | None:
    if original is not None and original.get("Message-ID"):
        return trim(str(original["Message-ID"]), 255)
    # Plain-text bounces often quote the original's headers in their text.
    match = OUR_MESSAGE_ID.search(_plain_text(parts))
    return match[0] if match else None


def _plain_text(parts: list[email.message.Message]) -> str:
    texts = [_decoded(p) for p in parts if p.get_content_type() == "text/plain"]
    return "\n".join(texts)[:_TEXT_SCAN]


def _decoded(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return payload[:_TEXT_SCAN].decode(part.get_content_charset() or "utf-8", "replace")


def _addresses_in(message: email.message.Message, names: tuple[str, ...]) -> tuple[str, ...]:
    found = []
    for name in names:
        for value in message.get_all(name) or ():
            found += [address for _, address in email.utils.getaddresses([str(value)]) if address]
    return tuple(found[:MAX_RECIPIENTS])


def _is_message(value: object) -> TypeGuard[email.message.Message]:
    return isinstance(value, email.message.Message)


def _address(field: object) -> str | None:
    """The address in a report field ("rfc822; ada@example.org"), lowercased, or None."""
    match = _ADDRESS.search(str(field or "").split(";", 1)[-1])
    return match[0].strip(".,").lower()[:320] if match else None


def _status(value: str) -> str | None:
    match = re.match(r"\s*([245]\.\d{1,3}\.\d{1,3})\b", value)
    return match[1] if match else None


def _warning(message: email.message.Message, text: str, status: str | None) -> bool:
    """Whether a plain-text bounce is a delay warning (the message is still queued)."""
    if kind_of_status(status) is BounceKind.SOFT:
        return True
    subject = str(message.get("Subject") or "")
    return bool(_WARNING_SUBJECT.search(subject) or _WARNING_TEXT.search(text))


def _line_with(text: str, needle: str) -> str | None:
    for line in text.splitlines():
        if needle in line:
            return trim(line)
    return None
