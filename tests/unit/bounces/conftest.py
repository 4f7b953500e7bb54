"""Bounce tests: a deployment at papers.example.org whose bounces come back to
bounces.papers.example.org, on SQLite; the fixtures under tests/fixtures/bounces/."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from papermail.bounces.processor import Intake
from papermail.bounces.verp import Verp
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    MailFormat,
    Subscriber,
    SubscriberStatus,
    Variant,
)
from papermail.subscribers.bounces import BouncePolicy
from tests.conftest import FIXTURES

BOUNCES = FIXTURES / "bounces"
SECRET = "test-secret-key-that-is-long-enough-0123456789"
BOUNCE_DOMAIN = "bounces.papers.example.org"
MAIL_DOMAIN = "papers.example.org"
SENT_AT = dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def fixture(name: str, *, token: str | None = None, verp_to: str | None = None) -> bytes:
    """A fixture's bytes; the VERP placeholder becomes ``token`` (or the whole address
    ``verp_to``, say an ordinary one, for a bounce that names no VERP address)."""
    raw = (BOUNCES / name).read_bytes()
    if verp_to is not None:
        raw = raw.replace(f"bounces+VERP@{BOUNCE_DOMAIN}".encode(), verp_to.encode())
    if token is not None:
        raw = raw.replace(b"bounces+VERP@", f"bounces+{token}@".encode())
    return raw


@pytest.fixture
def verp() -> Verp:
    return Verp(SECRET, domain=BOUNCE_DOMAIN)


@pytest.fixture
def policy() -> BouncePolicy:
    return BouncePolicy(threshold=3, score_threshold=5.0, soft_weight=1.0, decay_days=7.0)


@pytest.fixture
def intake(verp: Verp, policy: BouncePolicy) -> Intake:
    return Intake(verp=verp, policy=policy, mail_domain=MAIL_DOMAIN, max_bytes=1024 * 1024)


def add_subscriber(
    session: Session, email: str, status: SubscriberStatus = SubscriberStatus.ACTIVE
) -> Subscriber:
    subscriber = Subscriber(email=email, status=status)
    session.add(subscriber)
    session.flush()
    return subscriber


def add_delivery(
    session: Session,
    subscriber: Subscriber,
    *,
    day: dt.date = SENT_AT.date(),
    status: DeliveryStatus = DeliveryStatus.SENT,
    sent_at: dt.datetime | None = SENT_AT,
) -> Delivery:
    """A digest delivery to ``subscriber`` (its edition and variant made as needed)."""
    edition = session.query(Edition).filter_by(day=day, kind=EditionKind.DAILY).one_or_none()
    if edition is None:
        edition = Edition(day=day, kind=EditionKind.DAILY)
        session.add(edition)
        session.flush()
        session.add(
            Variant(
                key=f"v{edition.id}", edition_id=edition.id, format=MailFormat.HTML, selection=[]
            )
        )
        session.flush()
    delivery = Delivery(
        subscriber_id=subscriber.id,
        edition_id=edition.id,
        variant_key=f"v{edition.id}",
        status=status,
        sent_at=sent_at if status is DeliveryStatus.SENT else None,
    )
    session.add(delivery)
    session.flush()
    return delivery


@pytest.fixture
def ada(session: Session) -> Delivery:
    """Delivery 1 (the one the fixtures' Message-IDs name) to ada@example.org."""
    delivery = add_delivery(session, add_subscriber(session, "ada@example.org"))
    session.commit()
    assert delivery.id == 1
    return delivery


def all_fixtures() -> list[Path]:
    return sorted(BOUNCES.glob("*.mail"))
