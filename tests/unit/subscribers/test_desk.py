"""The subscriber desk's domain (papermail.subscribers.desk): search, one subscriber's
story, suppress and unsuppress with their audit entries, a test send, and migration 0006."""

from __future__ import annotations

import datetime as dt
import email
from email import policy
from email.message import EmailMessage
from pathlib import Path

import jinja2
import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from papermail.config import Settings
from papermail.db import make_engine
from papermail.dbadmin import alembic_config, upgrade
from papermail.delivery.base import PermanentError
from papermail.delivery.memory import MemoryBackend
from papermail.models import (
    AuditEntry,
    Delivery,
    DeliveryStatus,
    Feedback,
    FeedbackDirection,
    MailFormat,
    Paper,
    Subscriber,
    SubscriberStatus,
)
from papermail.pipeline.rendering import make_environment
from papermail.pipeline.variants import Identity
from papermail.subscribers import audit, desk, trial_send
from papermail.subscribers.bounces import BouncePolicy
from papermail.subscribers.confirmations import request_subscription, subscriber_for_token
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import InvalidEmail, erase, unsubscribe
from papermail.subscribers.tokens import InvalidToken, Links, Purpose
from tests.support.desk import seed_papers_edition
from tests.support.ledger import seed_delivery, seed_edition, seed_subscriber
from tests.support.migrations import insert_subscriber

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
ACTOR = "cli:ada"


def entries(session: Session) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


# --- search ---------------------------------------------------------------------------------


def test_search_finds_a_substring_of_the_address_in_any_case(session: Session) -> None:
    for address in ("ada@lab.example.org", "grace@navy.example.org", "alan@LAB.example.net"):
        seed_subscriber(session, email=address.lower())
    found = desk.search(session, query="LAB.example")
    assert [r.email for r in found.rows] == ["ada@lab.example.org", "alan@lab.example.net"]
    assert found.total == 2 and found.pages == 1


def test_search_treats_like_wildcards_as_plain_characters(session: Session) -> None:
    seed_subscriber(session, email="a_b@example.org")
    seed_subscriber(session, email="axb@example.org")
    assert [r.email for r in desk.search(session, query="a_b").rows] == ["a_b@example.org"]
    assert desk.search(session, query="%").total == 0


def test_search_by_status_and_by_both(session: Session) -> None:
    seed_subscriber(session, email="one@example.org")
    seed_subscriber(session, email="two@example.org", status=SubscriberStatus.SUPPRESSED)
    seed_subscriber(session, email="three@example.net", status=SubscriberStatus.SUPPRESSED)
    suppressed = desk.search(session, status=SubscriberStatus.SUPPRESSED)
    assert [r.email for r in suppressed.rows] == ["two@example.org", "three@example.net"]
    both = desk.search(session, query=".org", status=SubscriberStatus.SUPPRESSED)
    assert [r.email for r in both.rows] == ["two@example.org"]


def test_search_pages_through_the_matches_and_clamps_the_page(session: Session) -> None:
    for n in range(7):
        seed_subscriber(session, email=f"p{n}@example.org")
    first = desk.search(session, page=1, size=3)
    assert [r.email for r in first.rows] == ["p0@example.org", "p1@example.org", "p2@example.org"]
    assert (first.total, first.pages, first.has_previous, first.has_next) == (7, 3, False, True)
    last = desk.search(session, page=99, size=3)
    assert last.number == 3 and [r.email for r in last.rows] == ["p6@example.org"]
    assert not last.has_next and last.has_previous
    assert desk.search(session, page=0, size=3).number == 1
    assert desk.search(session, query="nobody", size=3).pages == 1


def test_lookup_by_id_or_address(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    assert desk.lookup(session, str(ada.id)) is ada
    assert desk.lookup(session, f"#{ada.id}") is ada
    assert desk.lookup(session, " Ada@Example.org ") is ada
    assert desk.lookup(session, "nobody@example.org") is None
    with pytest.raises(InvalidEmail):
        desk.lookup(session, "not an address")


# --- suppress and unsuppress -----------------------------------------------------------------


def test_suppress_needs_a_reason_and_changes_nothing_without_one(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    for reason in ("", "   ", "\n\t"):
        with pytest.raises(audit.DeskRefused, match="Give a reason"):
            desk.suppress(session, ada, actor=ACTOR, reason=reason, now=NOW)
    with pytest.raises(audit.DeskRefused, match="under 500"):
        desk.suppress(session, ada, actor=ACTOR, reason="x" * 501, now=NOW)
    assert ada.status is SubscriberStatus.ACTIVE and entries(session) == []


def test_suppress_records_who_when_why_and_skips_what_was_planned(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    edition = seed_edition(session, day=dt.date(2026, 12, 1))
    planned = seed_delivery(session, edition=edition, subscriber=ada, status=DeliveryStatus.PENDING)

    desk.suppress(session, ada, actor=ACTOR, reason=" spam  trap\n reported ", now=NOW)

    assert ada.status is SubscriberStatus.SUPPRESSED
    session.refresh(planned)
    assert planned.status is DeliveryStatus.SKIPPED
    assert planned.last_error == "subscriber is suppressed"  # the funnel counts it as such
    [entry] = entries(session)
    assert (entry.actor, entry.action, entry.subscriber_id, entry.at) == (
        ACTOR,
        "suppress",
        ada.id,
        NOW,
    )
    assert entry.reason == "spam trap reported"
    assert entry.detail == {"from": "active", "bounce_count": 0}
    with pytest.raises(audit.DeskRefused, match="already suppressed"):
        desk.suppress(session, ada, actor=ACTOR, reason="again", now=NOW)


def test_unsuppress_returns_an_active_address_to_active(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    ada.confirmed_at = NOW - dt.timedelta(days=30)
    ada.bounce_count = 2
    desk.suppress(session, ada, actor=ACTOR, reason="mailbox full", now=NOW)

    assert desk.status_before_suppression(session, ada) is SubscriberStatus.ACTIVE
    to = desk.unsuppress(session, ada, actor="ops", reason="they emptied it", now=NOW)

    assert to is SubscriberStatus.ACTIVE and ada.status is SubscriberStatus.ACTIVE
    assert ada.bounce_count == 0  # else the next single bounce suppresses it again
    last = entries(session)[-1]
    assert (last.action, last.actor, last.reason) == ("unsuppress", "ops", "they emptied it")
    assert last.detail == {"to": "active", "bounce_count": 2}
    with pytest.raises(audit.DeskRefused, match="not suppressed"):
        desk.unsuppress(session, ada, actor="ops", reason="again", now=NOW)


def test_unsuppress_never_reactivates_someone_who_unsubscribed(session: Session) -> None:
    bob = seed_subscriber(session, email="bob@example.org")
    bob.confirmed_at = NOW - dt.timedelta(days=30)
    unsubscribe(session, bob, now=NOW - dt.timedelta(days=2), reason="too many emails")
    desk.suppress(session, bob, actor=ACTOR, reason="complaint", now=NOW)

    assert desk.unsuppress(session, bob, actor=ACTOR, reason="mistake", now=NOW) is (
        SubscriberStatus.UNSUBSCRIBED
    )
    assert bob.status is SubscriberStatus.UNSUBSCRIBED


def test_unsubscribing_while_suppressed_wins_over_the_status_before(session: Session) -> None:
    cy = seed_subscriber(session, email="cy@example.org")
    cy.confirmed_at = NOW - dt.timedelta(days=30)
    desk.suppress(session, cy, actor=ACTOR, reason="bounced by hand", now=NOW)
    unsubscribe(session, cy, now=NOW + dt.timedelta(hours=1))  # their link still works
    assert cy.status is SubscriberStatus.SUPPRESSED

    assert desk.unsuppress(session, cy, actor=ACTOR, reason="x", now=NOW) is (
        SubscriberStatus.UNSUBSCRIBED
    )


def test_unsuppress_returns_a_never_confirmed_address_to_pending(session: Session) -> None:
    dee = seed_subscriber(session, email="dee@example.org", status=SubscriberStatus.PENDING)
    desk.suppress(session, dee, actor=ACTOR, reason="typo domain", now=NOW)
    assert desk.unsuppress(session, dee, actor=ACTOR, reason="fixed", now=NOW) is (
        SubscriberStatus.PENDING
    )


def test_an_address_the_bounce_policy_suppressed_goes_back_to_what_the_row_says(
    session: Session,
) -> None:
    # No audit entry: the bounce policy suppressed these. Confirmed means it was active.
    reader = seed_subscriber(session, email="reader@example.org")
    reader.confirmed_at = NOW - dt.timedelta(days=9)
    signup = seed_subscriber(session, email="signup@example.org", status=SubscriberStatus.PENDING)
    policy = BouncePolicy(threshold=1)
    policy.record(session, reader.id, sent_as=SubscriberStatus.ACTIVE)
    policy.record(session, signup.id, sent_as=SubscriberStatus.PENDING)
    session.refresh(reader)
    session.refresh(signup)
    assert reader.status is signup.status is SubscriberStatus.SUPPRESSED

    assert desk.unsuppress(session, reader, actor=ACTOR, reason="r", now=NOW) is (
        SubscriberStatus.ACTIVE
    )
    assert desk.unsuppress(session, signup, actor=ACTOR, reason="r", now=NOW) is (
        SubscriberStatus.PENDING
    )


def test_an_unsuppressed_pending_address_still_needs_its_own_confirmation(
    session: Session, links: Links
) -> None:
    dee = seed_subscriber(session, email="dee@example.org", status=SubscriberStatus.PENDING)
    desk.suppress(session, dee, actor=ACTOR, reason="typo", now=NOW)
    # While suppressed, the sign-up form mails it nothing.
    assert request_subscription(session, email=dee.email, prefs=Preferences(), now=NOW) is None
    desk.unsuppress(session, dee, actor=ACTOR, reason="fixed", now=NOW)
    assert dee.status is SubscriberStatus.PENDING and dee.confirmed_at is None


def test_audit_entries_outlive_an_erased_subscriber(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    desk.suppress(session, ada, actor=ACTOR, reason="legal request", now=NOW)
    session.commit()
    erase(session, ada)
    session.commit()
    [entry] = entries(session)
    assert entry.subscriber_id is None and entry.reason == "legal request"


# --- one subscriber's story ------------------------------------------------------------------


def test_history_merges_the_rows_timestamps_and_the_audit_log_in_time_order(
    session: Session,
) -> None:
    ada = seed_subscriber(session, email="ada@example.org")  # created FIXED_NOW (2026-11-26)
    ada.confirmed_at = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    desk.suppress(session, ada, actor="ops", reason="<b>spam</b>", now=NOW)
    desk.unsuppress(session, ada, actor="cli:bob", reason="ok now", now=NOW + dt.timedelta(hours=1))

    story = desk.history(session, ada)

    assert [(e.what, e.actor, e.reason) for e in story] == [
        ("created", None, None),
        ("confirmed: active", None, None),
        ("suppressed (was active)", "ops", "<b>spam</b>"),  # escaping is the shells' job
        ("unsuppressed: active", "cli:bob", "ok now"),
    ]
    assert [e.at for e in story] == sorted(e.at for e in story)


def test_the_profile_shows_deliveries_bounces_and_feedback(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    ada.bounce_count = 1
    days = [dt.date(2026, 11, d) for d in (20, 21, 22)]
    editions = [seed_edition(session, day=day) for day in days]
    seed_delivery(session, edition=editions[0], subscriber=ada, status=DeliveryStatus.SENT)
    seed_delivery(
        session,
        edition=editions[1],
        subscriber=ada,
        status=DeliveryStatus.FAILED,
        last_error="bounced: 550 5.1.1 no such user",
        created_at=NOW - dt.timedelta(days=1),
    )
    seed_delivery(
        session,
        edition=editions[2],
        subscriber=ada,
        status=DeliveryStatus.FAILED,
        last_error="gave up after 5 attempts: timeout",
        created_at=NOW,
    )
    session.add(Paper(id="2611.00001", title="A  paper\non robots"))
    session.flush()
    session.add(
        Feedback(
            subscriber_id=ada.id,
            paper_id="2611.00001",
            direction=FeedbackDirection.MORE,
            created_at=NOW,
        )
    )
    session.flush()

    found = desk.profile(session, ada)

    assert [d.edition_day for d in found.deliveries] == [days[2], days[1], days[0]]
    assert found.bounces.count == 1
    assert [d.last_error for d in found.bounces.deliveries] == ["bounced: 550 5.1.1 no such user"]
    assert [d.bounced for d in found.deliveries] == [False, True, False]
    assert [(m.title, m.direction) for m in found.feedback] == [
        ("A paper on robots", FeedbackDirection.MORE)
    ]
    assert found.unsuppress_to is None


def test_the_profile_lists_the_stored_bounce_and_complaint_events_newest_first(
    session: Session,
) -> None:
    from papermail.bounces import events
    from papermail.models import BounceKind, BounceSource

    ada = seed_subscriber(session, email="ada@example.org")
    for n, (kind, source, status) in enumerate(
        [
            (BounceKind.SOFT, BounceSource.SMTP, "4.2.2"),
            (BounceKind.COMPLAINT, BounceSource.POSTMARK, None),
        ]
    ):
        events.store(
            session,
            kind=kind,
            source=source,
            subscriber_id=ada.id,
            delivery_id=None,
            recipient=ada.email,
            status=status,
            diagnostic="<b>mailbox full</b>" if status else None,
            message=f"m{n}",
            now=NOW + dt.timedelta(minutes=n),
        )
    session.flush()

    found = desk.profile(session, ada).bounces

    assert [(e.kind, e.source, e.status) for e in found.events] == [
        ("complaint", "postmark", None),
        ("soft", "smtp", "4.2.2"),
    ]
    assert found.events[1].diagnostic == "<b>mailbox full</b>"  # kept as data, escaped when shown


def test_the_profile_lists_at_most_fifty_deliveries(session: Session) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    for n in range(desk.DELIVERIES_SHOWN + 3):
        edition = seed_edition(session, day=dt.date(2026, 1, 1) + dt.timedelta(days=n))
        seed_delivery(
            session,
            edition=edition,
            subscriber=ada,
            status=DeliveryStatus.SENT,
            created_at=NOW + dt.timedelta(minutes=n),
        )
    lines = desk.deliveries(session, ada.id)
    assert len(lines) == desk.DELIVERIES_SHOWN
    assert lines[0].edition_day == dt.date(2026, 1, 1) + dt.timedelta(days=52)


# --- a test send ------------------------------------------------------------------------------


@pytest.fixture
def env(settings: Settings) -> jinja2.Environment:
    return make_environment(settings.templates_dir)


IDENTITY = Identity(
    mail_from="papermail <digest@papers.example.org>",
    envelope_from="bounces@papers.example.org",
    domain="papers.example.org",
    list_name="papermail",
    reply_to=None,
)


def send(session: Session, subscriber: Subscriber, env, links, backend, **kw):  # type: ignore[no-untyped-def]
    return trial_send.send_test(
        session,
        subscriber,
        actor="ops",
        now=NOW,
        env=env,
        links=links,
        identity=IDENTITY,
        backend=backend,
        list_name="papermail",
        default_max_papers=10,
        **kw,
    )


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_test_send_is_their_digest_to_another_address_with_no_ledger_row(
    session: Session, env: jinja2.Environment, links: Links
) -> None:
    seed_papers_edition(session)
    ada = seed_subscriber(session, email="ada@example.org")
    ada.topics = ["robotics"]
    backend = MemoryBackend()

    sent = send(session, ada, env, links, backend, to=" Editor@Example.NET ")

    [message] = backend.outbox
    assert message.recipient == sent.to == "editor@example.net"
    mail = parsed(message.data)
    assert mail["To"] == "editor@example.net"
    assert str(mail["Subject"]).startswith("[test] ")
    assert mail["List-Unsubscribe"] is None
    body = mail.get_body(("plain",))
    assert body is not None and "robotics" in body.get_content()
    assert session.scalar(select(Delivery.id)) is None  # not in the ledger
    [entry] = entries(session)
    assert (entry.action, entry.actor, entry.detail["to"]) == ("test_send", "ops", sent.to)


def test_a_test_send_is_signed_as_digests_are(
    session: Session, env: jinja2.Environment, links: Links
) -> None:
    seed_papers_edition(session)
    ada = seed_subscriber(session, email="ada@example.org")
    backend = MemoryBackend()
    signed: list[bytes] = []

    def sign(data: bytes) -> bytes:
        signed.append(data)
        return b"DKIM-Signature: v=1; stand-in\r\n" + data

    send(session, ada, env, links, backend, to="editor@example.net", sign=sign)

    [message] = backend.outbox
    assert message.data == b"DKIM-Signature: v=1; stand-in\r\n" + signed[0]


def test_a_test_sends_links_do_not_act_on_the_reader(
    session: Session, env: jinja2.Environment, links: Links
) -> None:
    seed_papers_edition(session)
    ada = seed_subscriber(session, email="ada@example.org", status=SubscriberStatus.ACTIVE)
    ada.format = MailFormat.TEXT
    session.commit()
    backend = MemoryBackend()
    send(session, ada, env, links, backend, to="someone@example.net")
    body = parsed(backend.outbox[0].data).get_body(("plain",))
    assert body is not None
    text_body = body.get_content()
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES):
        prefix = f"https://papers.example.org/{purpose.value}/"
        token = text_body.split(prefix, 1)[1].split()[0].rstrip(">)")
        claims = links.signer.read(purpose, token)
        assert claims.subscriber_id == 0  # nobody: forwarding the test cannot unsubscribe Ada
        with pytest.raises(InvalidToken):
            subscriber_for_token(session, signer=links.signer, purpose=purpose, token=token)


def test_a_bounced_test_send_counts_against_nobody(
    session: Session, env: jinja2.Environment, links: Links
) -> None:
    seed_papers_edition(session)
    ada = seed_subscriber(session, email="ada@example.org")
    backend = MemoryBackend(fail=lambda m: PermanentError("550 no such user", code=550))
    with pytest.raises(PermanentError):
        send(session, ada, env, links, backend, to="ghost@example.net")
    assert ada.bounce_count == 0 and ada.status is SubscriberStatus.ACTIVE
    assert entries(session) == []  # only what went is recorded


def test_a_test_send_refuses_a_bad_address_and_says_when_there_is_no_edition(
    session: Session, env: jinja2.Environment, links: Links
) -> None:
    ada = seed_subscriber(session, email="ada@example.org")
    backend = MemoryBackend()
    with pytest.raises(LookupError, match="no edition"):
        send(session, ada, env, links, backend, to="ok@example.net")
    seed_papers_edition(session)
    with pytest.raises(InvalidEmail):
        send(session, ada, env, links, backend, to="ok@example.net\r\nBcc: x@evil.example")
    assert backend.outbox == []


# --- the migration ----------------------------------------------------------------------------


def test_migration_0006_upgrades_and_downgrades_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'migrate.db'}")  # foreign keys on
    upgrade(engine, "0006")
    with engine.begin() as conn:
        insert_subscriber(conn)
        conn.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, subscriber_id, detail, reason)"
                " VALUES ('2026-12-01', 'ops', 'suppress', 1, '{}', 'why')"
            )
        )
        conn.execute(text("DELETE FROM subscribers"))  # ON DELETE SET NULL: the entry stays
        assert conn.execute(text("SELECT subscriber_id, reason FROM audit_log")).one() == (
            None,
            "why",
        )
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
    with engine.connect() as conn:
        assert "audit_log" not in inspect(conn).get_table_names()
    upgrade(engine)
    with engine.connect() as conn:
        assert "audit_log" in inspect(conn).get_table_names()
    engine.dispose()
