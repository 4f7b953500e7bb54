"""Signed links: bound to one purpose and one subscriber, tamper-evident, expiring by kind."""

from __future__ import annotations

import datetime as dt

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from papermail.subscribers.tokens import MAX_AGE, InvalidToken, Links, Purpose, TokenSigner

SECRET = "test-secret-key-that-is-long-enough-0123456789"  # noqa: S105 (a test key)
SIGNED_AT = 1_800_000_000  # seconds since the epoch


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """itsdangerous's clock, as a settable value: [now]."""
    now = [SIGNED_AT]
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now[0])
    return now


def test_round_trip(signer: TokenSigner) -> None:
    token = signer.make(Purpose.PREFERENCES, subscriber_id=42, token_version=3)
    claims = signer.read(Purpose.PREFERENCES, token)
    assert (claims.subscriber_id, claims.token_version, claims.purpose) == (
        42,
        3,
        Purpose.PREFERENCES,
    )


@pytest.mark.parametrize("made_for", list(Purpose))
@pytest.mark.parametrize("used_for", list(Purpose))
def test_a_token_only_works_for_its_purpose(
    signer: TokenSigner, made_for: Purpose, used_for: Purpose
) -> None:
    token = signer.make(made_for, subscriber_id=1, token_version=1)
    if made_for is used_for:
        assert signer.read(used_for, token).subscriber_id == 1
    else:
        with pytest.raises(InvalidToken) as info:
            signer.read(used_for, token)
        assert info.value.reason == "bad signature"


def test_tokens_are_url_safe(signer: TokenSigner) -> None:
    for sid in (1, 10**9, 2**40):
        token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=sid, token_version=7)
        assert all(c.isalnum() or c in "-_." for c in token), token


def test_another_secret_does_not_verify(signer: TokenSigner) -> None:
    token = TokenSigner("another-secret-entirely-0123456789abcdef").make(
        Purpose.UNSUBSCRIBE, subscriber_id=1, token_version=1
    )
    with pytest.raises(InvalidToken, match="bad signature"):
        signer.read(Purpose.UNSUBSCRIBE, token)


def test_any_changed_character_is_refused(signer: TokenSigner) -> None:
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=12, token_version=1)
    for index in range(len(token)):
        replacement = "A" if token[index] != "A" else "B"
        tampered = token[:index] + replacement + token[index + 1 :]
        try:
            claims = signer.read(Purpose.UNSUBSCRIBE, tampered)
        except InvalidToken:
            continue
        # base64 padding bits can absorb a change without altering the decoded bytes.
        assert claims.subscriber_id == 12, f"position {index} changed the subscriber"


def test_swapping_the_payload_for_another_subscriber_is_refused(signer: TokenSigner) -> None:
    mine = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=1, token_version=1)
    theirs = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=2, token_version=1)
    forged = theirs.split(".")[0] + "." + ".".join(mine.split(".")[1:])
    with pytest.raises(InvalidToken):
        signer.read(Purpose.UNSUBSCRIBE, forged)


@pytest.mark.parametrize("garbage", ["", ".", "abc", "a.b.c", "x" * 500, "🧪.🧪.🧪"])
def test_garbage_is_an_invalid_token(signer: TokenSigner, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        signer.read(Purpose.CONFIRM, garbage)


@pytest.mark.parametrize(
    "payload", [[1], [1, 2, 3], ["1", 2], [1.5, 2], [True, 1], {"id": 1}, None, "1,2"]
)
def test_a_well_signed_but_malformed_payload_is_refused(payload: object) -> None:
    # Someone holding the secret (or a future bug) signing the wrong shape must not pass.
    raw = URLSafeTimedSerializer(SECRET, salt="papermail.preferences").dumps(payload)
    with pytest.raises(InvalidToken, match="malformed payload"):
        TokenSigner(SECRET).read(Purpose.PREFERENCES, raw)


def test_confirm_link_expires_after_two_days(signer: TokenSigner, frozen: list[int]) -> None:
    token = signer.make(Purpose.CONFIRM, subscriber_id=5, token_version=1)
    max_age = MAX_AGE[Purpose.CONFIRM]
    assert max_age == dt.timedelta(days=2)
    frozen[0] = SIGNED_AT + int(max_age.total_seconds())
    assert signer.read(Purpose.CONFIRM, token).subscriber_id == 5
    frozen[0] += 1
    with pytest.raises(InvalidToken) as info:
        signer.read(Purpose.CONFIRM, token)
    assert info.value.reason == "expired"


def test_preferences_link_expires_after_ninety_days(signer: TokenSigner, frozen: list[int]) -> None:
    token = signer.make(Purpose.PREFERENCES, subscriber_id=5, token_version=1)
    frozen[0] = SIGNED_AT + 89 * 86400
    assert signer.read(Purpose.PREFERENCES, token).subscriber_id == 5
    frozen[0] = SIGNED_AT + 91 * 86400
    with pytest.raises(InvalidToken, match="expired"):
        signer.read(Purpose.PREFERENCES, token)


def test_unsubscribe_link_never_expires(signer: TokenSigner, frozen: list[int]) -> None:
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=5, token_version=1)
    frozen[0] = SIGNED_AT + 10 * 365 * 86400
    assert signer.read(Purpose.UNSUBSCRIBE, token).subscriber_id == 5


def test_tokens_signed_in_the_future_are_refused(signer: TokenSigner, frozen: list[int]) -> None:
    token = signer.make(Purpose.CONFIRM, subscriber_id=5, token_version=1)
    frozen[0] = SIGNED_AT - 3600
    with pytest.raises(InvalidToken, match="expired"):
        signer.read(Purpose.CONFIRM, token)


def test_token_version_is_carried_for_revocation(signer: TokenSigner) -> None:
    old = signer.make(Purpose.PREFERENCES, subscriber_id=5, token_version=1)
    new = signer.make(Purpose.PREFERENCES, subscriber_id=5, token_version=2)
    assert signer.read(Purpose.PREFERENCES, old).token_version == 1
    assert signer.read(Purpose.PREFERENCES, new).token_version == 2


# --- links ----------------------------------------------------------------------------------


def test_links_carry_tokens_for_their_own_purpose(signer: TokenSigner) -> None:
    links = Links("https://papers.example.org", signer)
    for purpose, url in [
        (Purpose.CONFIRM, links.confirm(9, 2)),
        (Purpose.PREFERENCES, links.preferences(9, 2)),
        (Purpose.UNSUBSCRIBE, links.unsubscribe(9, 2)),
    ]:
        prefix = f"https://papers.example.org/{purpose.value}/"
        assert url.startswith(prefix)
        claims = signer.read(purpose, url.removeprefix(prefix))
        assert (claims.subscriber_id, claims.token_version) == (9, 2)


def test_edition_and_paper_links() -> None:
    links = Links("https://papers.example.org", TokenSigner(SECRET))
    day = dt.date(2026, 11, 26)
    assert links.edition(day) == "https://papers.example.org/editions/2026-11-26"
    assert links.edition(day, "weekly") == (
        "https://papers.example.org/editions/2026-11-26?kind=weekly"
    )
    assert links.paper("2611.21401") == "https://huggingface.co/papers/2611.21401"


@pytest.mark.parametrize("purpose", list(Purpose))
def test_tokens_are_exactly_the_stock_itsdangerous_ones(
    signer: TokenSigner, frozen: list[int], purpose: Purpose
) -> None:
    # Links in mail already sent (unsubscribe never expires) must keep working: the
    # faster signer has to produce and accept the very bytes itsdangerous does.
    stock = TimestampSigner(SECRET, salt=f"papermail.{purpose.value}")
    ours = signer.make(purpose, subscriber_id=42, token_version=3)
    assert ours == stock.sign(b"42.3").decode()
    theirs = stock.sign(b"7.1").decode()
    assert signer.read(purpose, theirs).subscriber_id == 7
