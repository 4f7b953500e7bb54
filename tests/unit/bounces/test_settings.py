"""The bounce settings: a bounce domain turns VERP on, and is a domain name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from papermail.config import Settings, describe_errors


def make(**fields: object) -> Settings:
    return Settings(_env_file=None, mail_from="papermail <digest@Papers.Example.org>", **fields)


def test_without_a_bounce_domain_verp_is_off_and_bounces_come_to_the_mail_domain() -> None:
    settings = make()

    assert not settings.verp_enabled
    assert settings.effective_bounce_domain == "papers.example.org"


def test_a_bounce_domain_turns_verp_on_unless_told_otherwise() -> None:
    assert make(bounce_domain="Bounces.Papers.Example.org").verp_enabled
    assert make(bounce_domain="bounces.papers.example.org").effective_bounce_domain == (
        "bounces.papers.example.org"
    )
    assert not make(bounce_domain="bounces.papers.example.org", verp=False).verp_enabled
    assert make(verp=True).verp_enabled


@pytest.mark.parametrize(
    "domain",
    ["bounces", "bounces.example.org\r\nRCPT TO:<x@y>", "-bad-.example.org", "a@b.example.org", ""],
)
def test_a_bounce_domain_must_be_a_domain_name(domain: str) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=None, bounce_domain=domain or " ")

    assert describe_errors(error.value).startswith("PAPERMAIL_BOUNCE_DOMAIN: must be a domain")


def test_topics_and_the_mailbox() -> None:
    settings = make(
        ses_topic_arns=" arn:aws:sns:eu-west-1:1:a, ,arn:aws:sns:eu-west-1:1:b ",
        bounce_mailbox_host="imap.example.org",
    )

    assert settings.ses_topics == {"arn:aws:sns:eu-west-1:1:a", "arn:aws:sns:eu-west-1:1:b"}
    assert not settings.bounce_mailbox_configured  # a user too
    assert make(
        bounce_mailbox_host="imap.example.org", bounce_mailbox_user="b"
    ).bounce_mailbox_configured
