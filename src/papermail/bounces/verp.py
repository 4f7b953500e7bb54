"""VERP: every message's envelope sender names what it was, signed.

A digest goes out with ``MAIL FROM:<bounces+d1234-<mac>@bounces.example.org>``; the
receiving server writes that into Return-Path and sends any later bounce there, so the
bounce names its delivery without our parsing the recipient out of a free-form report.
A confirmation (no delivery row) names its subscriber instead: ``s<id>``.

The token is ``<kind><id>-<mac>``: the mac is HMAC-SHA256 over ``<kind><id>``, cut to 80
bits and written in lowercase base32, because some servers lowercase local parts (and
uppercase ones are read back lowercased). The key is derived from the secret key the way
every link's is (papermail.subscribers.tokens: one salt per purpose), so a bounce cannot
be forged for a delivery without the secret, and a link token is no VERP token. No expiry:
bounces come back days later, and a valid token only lets its bounce be counted against
the one delivery it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from itsdangerous import Signer

from papermail.subscribers.tokens import InvalidToken

LOCAL_PREFIX = "bounces"
MAC_BYTES = 10  # 80 bits: 16 base32 characters
_TOKEN = re.compile(r"([ds])([1-9][0-9]{0,17})-([a-z2-7]{16})")
_ADDRESS = re.compile(rf"{LOCAL_PREFIX}\+([^@\s]{{1,64}})@([^@\s>]{{1,253}})", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class VerpClaims:
    """What a VERP token names: a delivery (a digest) or a subscriber (a confirmation)."""

    delivery_id: int | None = None
    subscriber_id: int | None = None


class Verp:
    """Makes and reads ``bounces+<token>@<domain>`` addresses."""

    def __init__(self, secret: str, *, domain: str) -> None:
        self.domain = domain.lower()
        self._key = Signer(secret, salt="papermail.verp").derive_key()

    def address(self, *, delivery_id: int | None = None, subscriber_id: int | None = None) -> str:
        """The envelope sender for one delivery (or, without one, one subscriber)."""
        token = self.token(delivery_id=delivery_id, subscriber_id=subscriber_id)
        return f"{LOCAL_PREFIX}+{token}@{self.domain}"

    def token(self, *, delivery_id: int | None = None, subscriber_id: int | None = None) -> str:
        if delivery_id is not None and subscriber_id is None:
            subject = f"d{int(delivery_id)}"
        elif subscriber_id is not None and delivery_id is None:
            subject = f"s{int(subscriber_id)}"
        else:
            raise ValueError("a VERP token names a delivery or a subscriber, one of them")
        return f"{subject}-{self._mac(subject)}"

    def read(self, token: str) -> VerpClaims:
        """What a token names, or InvalidToken (malformed, altered, truncated, forged)."""
        match = _TOKEN.fullmatch(token.strip().lower())
        if match is None:
            raise InvalidToken("malformed VERP token")
        kind, number, mac = match.groups()
        if not hmac.compare_digest(mac, self._mac(kind + number)):
            raise InvalidToken("bad VERP signature")
        if kind == "d":
            return VerpClaims(delivery_id=int(number))
        return VerpClaims(subscriber_id=int(number))

    def read_address(self, address: str) -> VerpClaims:
        """Claims from a whole address; InvalidToken for another domain or local part."""
        token = self.token_in(address)
        if token is None:
            raise InvalidToken(f"not a VERP address of {self.domain}")
        return self.read(token)

    def token_in(self, address: str) -> str | None:
        """The token of ``bounces+<token>@<our domain>`` (any case), else None."""
        match = _ADDRESS.fullmatch(address.strip().strip("<>").strip())
        if match is None or match[2].lower().rstrip(".") != self.domain:
            return None
        return match[1]

    def _mac(self, subject: str) -> str:
        digest = hmac.digest(self._key, subject.encode("ascii"), hashlib.sha256)[:MAC_BYTES]
        return base64.b32encode(digest).decode("ascii").lower()  # 10 bytes: no padding
