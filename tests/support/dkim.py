"""DKIM in tests: dkimpy's verifier against a DNS stand-in that knows one record."""

from __future__ import annotations

import dkim

from papermail.delivery.dkim_keys import PrivateKey, dns_record_name, dns_record_value


def dns_with(records: dict[str, str]):  # type: ignore[no-untyped-def]
    """A ``dnsfunc`` for dkimpy: the TXT record of each name in ``records``, else None."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode("ascii").rstrip("."), "").encode("ascii") or None

    return lookup


def verifies(message: bytes, *, selector: str, domain: str, key: PrivateKey) -> bool:
    """True when dkimpy verifies ``message``'s first DKIM-Signature against ``key``'s record."""
    record = {dns_record_name(selector, domain): dns_record_value(key)}
    return bool(dkim.verify(message, dnsfunc=dns_with(record)))
