"""The late half of the bounce policy: which hard bounces suppress at once, and the soft
score that decays (a clock passed in: ``now``)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from papermail.models import Subscriber, SubscriberStatus
from papermail.subscribers import desk
from papermail.subscribers.bounces import BouncePolicy, address_gone
from tests.support.bounces import soft_bounce

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("status", "gone"),
    [
        ("5.1.1", True),  # no such mailbox
        ("5.1.10", True),  # null MX / recipient not found (Exchange)
        ("5.1.2", True),  # no such domain
        ("5.2.1", True),  # mailbox disabled
        (None, True),  # a hard bounce that says nothing more
        ("5.7.1", False),  # refused as spam: the message, not the address
        ("5.2.2", False),  # mailbox full, reported as permanent
        ("5.4.4", False),  # routing
        ("5.0.0", False),
    ],
)
def test_which_late_hard_bounces_say_the_address_is_gone(status: str | None, gone: bool) -> None:
    assert address_gone(status) is gone


def test_a_soft_bounces_weight_halves_every_decay_period() -> None:
    policy = BouncePolicy(soft_weight=2.0, decay_days=7.0)

    assert policy.soft_score([dt.timedelta(0)]) == 2.0
    assert policy.soft_score([7 * DAY]) == pytest.approx(1.0)
    assert policy.soft_score([14 * DAY]) == pytest.approx(0.5)
    assert policy.soft_score([dt.timedelta(0), 7 * DAY, 14 * DAY]) == pytest.approx(3.5)
    assert policy.soft_score([-DAY]) == 2.0  # a clock running behind never adds weight


def test_the_score_read_at_a_later_now_has_decayed(session: Session) -> None:
    policy = BouncePolicy(score_threshold=3.0, soft_weight=1.0, decay_days=1.0)
    subscriber = Subscriber(email="ada@example.org", status=SubscriberStatus.ACTIVE)
    session.add(subscriber)
    session.flush()

    assert soft_bounce(session, policy, subscriber, T0) == (1.0, False)
    score, suppressed = soft_bounce(session, policy, subscriber, T0 + DAY)
    assert score == pytest.approx(1.5) and not suppressed
    score, suppressed = soft_bounce(session, policy, subscriber, T0 + 30 * DAY)  # a month of quiet
    assert score == pytest.approx(1.0, abs=1e-6) and not suppressed
    for hours in (1, 2, 3):
        score, suppressed = soft_bounce(
            session, policy, subscriber, T0 + 30 * DAY + hours * dt.timedelta(hours=1)
        )
    assert score >= 3.0 and suppressed
    session.refresh(subscriber)
    assert subscriber.status is SubscriberStatus.SUPPRESSED and subscriber.bounce_count == 0


def test_the_soft_score_suppresses_only_the_status_the_mail_went_out_under(
    session: Session,
) -> None:
    policy = BouncePolicy(score_threshold=1.0)
    subscriber = Subscriber(email="ada@example.org", status=SubscriberStatus.UNSUBSCRIBED)
    session.add(subscriber)
    session.flush()

    score, suppressed = soft_bounce(session, policy, subscriber, T0)

    assert score == 1.0 and not suppressed
    session.refresh(subscriber)
    assert subscriber.status is SubscriberStatus.UNSUBSCRIBED


def test_unsuppressing_starts_the_soft_score_again_from_zero(session: Session) -> None:
    """An operator who unsuppresses an address forgives its soft bounces, as its count:
    the next soft bounce alone must not suppress it again."""
    policy = BouncePolicy(score_threshold=2.5, soft_weight=1.0, decay_days=7.0)
    ada = Subscriber(
        email="ada@example.org", status=SubscriberStatus.ACTIVE, confirmed_at=T0 - 30 * DAY
    )
    session.add(ada)
    session.flush()
    for hours in (1, 2, 3):
        score, suppressed = soft_bounce(session, policy, ada, T0 + hours * dt.timedelta(hours=1))
    session.refresh(ada)
    assert suppressed and ada.status is SubscriberStatus.SUPPRESSED

    desk.unsuppress(session, ada, actor="ops", reason="mailbox emptied", now=T0 + DAY)
    assert ada.status is SubscriberStatus.ACTIVE
    score, suppressed = soft_bounce(session, policy, ada, T0 + DAY + dt.timedelta(hours=1))
    assert score == pytest.approx(1.0) and not suppressed  # only the bounce after it counts
    for hours in (2, 3):
        at = T0 + DAY + hours * dt.timedelta(hours=1)
        score, suppressed = soft_bounce(session, policy, ada, at)
    assert suppressed  # three new ones: the policy still works after a reset
