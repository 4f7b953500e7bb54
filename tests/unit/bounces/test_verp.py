"""VERP addresses: each digest's envelope sender names its delivery, signed."""

from __future__ import annotations

import dataclasses

import pytest

from papermail.bounces.verp import Verp, VerpClaims
from papermail.pipeline.variants import Identity
from papermail.subscribers.tokens import InvalidToken, Purpose, TokenSigner
from tests.unit.bounces.conftest import BOUNCE_DOMAIN, SECRET


def test_a_delivery_token_reads_back_as_its_delivery(verp: Verp) -> None:
    address = verp.address(delivery_id=1234)

    assert address.startswith("bounces+d1234-") and address.endswith(f"@{BOUNCE_DOMAIN}")
    assert verp.read_address(address) == VerpClaims(delivery_id=1234)


def test_a_confirmation_token_names_its_subscriber(verp: Verp) -> None:
    assert verp.read_address(verp.address(subscriber_id=7)) == VerpClaims(subscriber_id=7)


def test_tokens_are_short_lowercase_and_survive_a_server_changing_case(verp: Verp) -> None:
    token = verp.token(delivery_id=987654321)
    local = f"bounces+{token}"

    assert token == token.lower() and token.replace("-", "").isalnum()
    assert len(local) <= 64  # RFC 5321's local-part limit
    assert verp.read_address(f"{local.upper()}@{BOUNCE_DOMAIN.upper()}") == VerpClaims(
        delivery_id=987654321
    )


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"), id="altered-mac"),
        pytest.param(lambda t: t.replace("d1234-", "d1235-"), id="altered-delivery"),
        pytest.param(lambda t: t.replace("d1234-", "s1234-"), id="delivery-read-as-subscriber"),
        pytest.param(lambda t: t[:-3], id="truncated"),
        pytest.param(lambda t: t + "a", id="lengthened"),
        pytest.param(lambda t: t.split("-")[0], id="no-mac"),
        pytest.param(lambda t: "d01234-" + t.split("-")[1], id="leading-zero"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_forged_altered_or_truncated_tokens_are_refused(verp: Verp, damage) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidToken):
        verp.read(damage(verp.token(delivery_id=1234)))


def test_a_token_signed_with_another_secret_is_refused(verp: Verp) -> None:
    other = Verp("another-secret-key-that-is-long-enough-987654", domain=BOUNCE_DOMAIN)

    with pytest.raises(InvalidToken, match="bad VERP signature"):
        verp.read(other.token(delivery_id=1234))


def test_a_link_token_is_no_verp_token(verp: Verp) -> None:
    link = TokenSigner(SECRET).make(Purpose.UNSUBSCRIBE, subscriber_id=1234, token_version=1)

    with pytest.raises(InvalidToken):
        verp.read(link)


def test_addresses_of_another_domain_or_local_part_are_not_ours(verp: Verp) -> None:
    token = verp.token(delivery_id=1)

    assert verp.token_in(f"bounces+{token}@evil.example") is None
    assert verp.token_in(f"digest+{token}@{BOUNCE_DOMAIN}") is None
    assert verp.token_in(f"<bounces+{token}@{BOUNCE_DOMAIN}>") == token
    with pytest.raises(InvalidToken, match="not a VERP address"):
        verp.read_address(f"postmaster@{BOUNCE_DOMAIN}")


def test_a_token_names_one_thing() -> None:
    verp = Verp(SECRET, domain=BOUNCE_DOMAIN)
    with pytest.raises(ValueError):
        verp.token()
    with pytest.raises(ValueError):
        verp.token(delivery_id=1, subscriber_id=1)


def test_the_envelope_sender_is_per_delivery_only_with_verp_on(verp: Verp) -> None:
    plain = Identity(
        mail_from="papermail <digest@papers.example.org>",
        envelope_from="digest@papers.example.org",
        domain="papers.example.org",
        list_name="papermail",
    )
    with_verp = dataclasses.replace(plain, verp=verp)

    assert plain.envelope_for(delivery_id=5) == "digest@papers.example.org"
    assert with_verp.envelope_for(delivery_id=5) == verp.address(delivery_id=5)
    assert with_verp.envelope_for(subscriber_id=9) == verp.address(subscriber_id=9)
