"""The subscribe form's budgets: per mailbox (not per spelling) and per client IP."""

from __future__ import annotations

import fakeredis
import pytest

from papermail.subscribers.signup_limits import Budget, SignupLimits, mailbox_key


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("victim@example.org", "victim@example.org"),
        ("Victim+0@Example.ORG", "victim@example.org"),
        ("victim+a+b@example.org", "victim@example.org"),
        ("j.doe+news@googlemail.com", "jdoe@gmail.com"),
        ("J.Doe@gmail.com", "jdoe@gmail.com"),
        ("j.doe@example.org", "j.doe@example.org"),  # dots matter elsewhere
        ("+tag@example.org", "+tag@example.org"),  # nothing before the tag: keep it whole
    ],
)
def test_mailbox_key_folds_what_reaches_the_same_inbox(address: str, mailbox: str) -> None:
    assert mailbox_key(address) == mailbox


def test_plus_tags_share_one_budget() -> None:
    limits = SignupLimits(fakeredis.FakeRedis(), per_address=Budget(3, 86400))
    allowed = [limits.allow_address(f"victim+{n}@example.org") for n in range(5)]
    assert allowed == [True, True, True, False, False]
    assert limits.allow_address("VICTIM@example.org") is False
    assert limits.allow_address("someone.else@example.org") is True
