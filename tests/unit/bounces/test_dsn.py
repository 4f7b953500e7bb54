"""Reading raw bounces: RFC 3464 DSNs, RFC 5965 complaints, plain-text bounces through
flufl.bounce, and what hostile or broken input gets (a refusal with a reason)."""

from __future__ import annotations

import time

import pytest

from papermail.bounces import dsn
from papermail.bounces.reports import Refused
from papermail.models import BounceKind
from tests.unit.bounces.conftest import BOUNCE_DOMAIN, all_fixtures, fixture

MIB = 1024 * 1024
HARD, SOFT, COMPLAINT = BounceKind.HARD, BounceKind.SOFT, BounceKind.COMPLAINT

# fixture: (how it is read, kind, status, recipient, the original's Message-ID)
EXPECTED = {
    "postfix_hard.mail": ("dsn", HARD, "5.1.1", "ada@example.org", "d1"),
    "postfix_soft.mail": ("dsn", SOFT, "4.4.1", "grace@example.net", "d2"),
    "exim_hard.mail": ("heuristic", HARD, "5.1.1", "alan@example.net", "d3"),
    "exim_soft.mail": ("heuristic", SOFT, "4.2.2", "alan@example.net", None),
    "exchange_hard.mail": ("dsn", HARD, "5.1.10", "margaret@contoso.com", "d4"),
    "exchange_soft.mail": ("dsn", SOFT, "4.4.7", "margaret@contoso.com", "d4"),
    "gmail_hard.mail": ("dsn", HARD, "5.1.1", "marie@gmail.example", "d5"),
    "gmail_soft.mail": ("dsn", SOFT, "4.2.2", "marie@gmail.example", "d5"),
    "gmail_policy.mail": ("dsn", HARD, "5.7.1", "marie@gmail.example", "d5"),
    "arf_complaint.mail": ("arf", COMPLAINT, None, "ada@example.org", "d1"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bounce_reads_as_its_kind_status_recipient_and_message(name: str) -> None:
    form, kind, status, recipient, delivery = EXPECTED[name]

    parsed = dsn.parse(fixture(name), max_bytes=MIB)

    assert parsed.form == form
    [report] = parsed.reports
    assert (report.kind, report.status, report.recipient) == (kind, status, recipient)
    expected_id = f"<papermail.e1.{delivery}@papers.example.org>" if delivery else None
    assert report.message_id == expected_id
    assert report.diagnostic is None or len(report.diagnostic) <= 500


def test_every_fixture_is_covered() -> None:
    refused = {"arf_not_spam.mail", "malformed.mail", "huge.mail"}
    assert {p.name for p in all_fixtures()} == set(EXPECTED) | refused


@pytest.mark.parametrize("name", ["postfix_hard.mail", "exim_hard.mail", "gmail_soft.mail"])
def test_the_verp_address_a_bounce_came_to_is_offered_unverified(name: str) -> None:
    parsed = dsn.parse(fixture(name, token="d1-abc"), max_bytes=MIB)

    assert f"bounces+d1-abc@{BOUNCE_DOMAIN}" in parsed.verp_addresses


def test_a_complaint_offers_the_originals_return_path() -> None:
    # A feedback loop mails its own address, not ours: the VERP address is in the
    # original's Return-Path and the report's Original-Mail-From.
    parsed = dsn.parse(fixture("arf_complaint.mail", token="d1-abc"), max_bytes=MIB)

    assert parsed.verp_addresses[0] == "fbl@papers.example.org"
    assert f"bounces+d1-abc@{BOUNCE_DOMAIN}" in parsed.verp_addresses


def test_the_diagnostic_is_the_servers_words_without_the_type_prefix() -> None:
    [report] = dsn.parse(fixture("postfix_hard.mail"), max_bytes=MIB).reports

    assert report.diagnostic == (
        "550 5.1.1 <ada@example.org>: Recipient address rejected: User unknown in local "
        "recipient table"
    )


def test_a_not_spam_feedback_report_is_no_complaint() -> None:
    with pytest.raises(Refused, match="not-spam"):
        dsn.parse(fixture("arf_not_spam.mail"), max_bytes=MIB)


def test_a_malformed_dsn_is_refused_with_a_reason() -> None:
    with pytest.raises(Refused, match="without a recipient block"):
        dsn.parse(fixture("malformed.mail"), max_bytes=MIB)


def test_a_huge_dsn_over_the_cap_is_not_even_parsed() -> None:
    raw = fixture("huge.mail")
    assert len(raw) > 64 * 1024

    with pytest.raises(Refused, match="too large"):
        dsn.parse(raw, max_bytes=64 * 1024)


def test_a_huge_dsn_under_the_cap_is_read_within_bounds() -> None:
    started = time.perf_counter()
    parsed = dsn.parse(fixture("huge.mail"), max_bytes=MIB)

    assert time.perf_counter() - started < 2.0
    assert len(parsed.reports) == dsn.MAX_RECIPIENTS  # of 2,001 blocks
    assert parsed.reports[0].recipient == "ada@example.org"
    diagnostic = parsed.reports[0].diagnostic or ""
    assert len(diagnostic) == 500 and diagnostic.endswith("…")


def test_a_message_that_is_no_bounce_is_refused() -> None:
    raw = (
        b"From: someone@example.org\r\nTo: bounces+d1-abc@bounces.papers.example.org\r\n"
        b"Subject: hello\r\n\r\nJust saying hello.\r\n"
    )
    with pytest.raises(Refused, match="no bounce or complaint found"):
        dsn.parse(raw, max_bytes=MIB)


def test_a_dsn_reporting_only_deliveries_is_no_bounce() -> None:
    raw = (
        fixture("postfix_hard.mail")
        .replace(b"Action: failed", b"Action: delivered")
        .replace(b"Status: 5.1.1", b"Status: 2.0.0")
    )
    with pytest.raises(Refused, match="no failure"):
        dsn.parse(raw, max_bytes=MIB)


def test_a_message_of_too_many_parts_is_refused() -> None:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n" for n in range(100))
    raw = (
        f"Content-Type: multipart/mixed; boundary=b\r\nMIME-Version: 1.0\r\n\r\n{parts}--b--\r\n"
    ).encode()
    with pytest.raises(Refused, match="too many MIME parts"):
        dsn.parse(raw, max_bytes=MIB)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe" * 100,
        b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n",
        b"Content-Type: message/delivery-status\r\n\r\n",
        b"Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n",
    ],
)
def test_garbage_is_refused_never_raised(raw: bytes) -> None:
    try:
        parsed = dsn.parse(raw, max_bytes=MIB)
    except Refused as refused:
        assert refused.reason
    else:  # a bare feedback report is a complaint about nobody in particular
        assert all(r.recipient is None for r in parsed.reports)
