"""The domain side of sign-up: request, confirmation email, confirm, expiry, tasks."""

from __future__ import annotations

import datetime as dt
import email
from email import policy

import pytest
from sqlalchemy.orm import Session, sessionmaker

from papermail.config import Settings
from papermail.delivery.base import PermanentError, TransientError
from papermail.delivery.memory import MemoryBackend
from papermail.models import Subscriber, SubscriberStatus
from papermail.pipeline.rendering import make_environment
from papermail.pipeline.variants import Identity
from papermail.subscribers import confirmations
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import InvalidEmail, unsubscribe
from papermail.subscribers.tokens import InvalidToken, Links, Purpose

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
IDENTITY = Identity(
    mail_from="papermail <digest@papers.example.org>",
    envelope_from="digest@papers.example.org",
    domain="papers.example.org",
    list_name="papermail daily papers",
)


def _request(session: Session, address: str, **prefs: object) -> int | None:
    result = confirmations.request_subscription(
        session, email=address, prefs=Preferences(**prefs), now=NOW
    )
    session.commit()
    return result


def _send(
    session: Session, links: Links, settings: Settings, backend: MemoryBackend, subscriber_id: int
) -> bool:
    return confirmations.send_confirmation(
        session,
        subscriber_id=subscriber_id,
        env=make_environment(settings.templates_dir),
        links=links,
        identity=IDENTITY,
        backend=backend,
        now=NOW,
        bounce_threshold=settings.bounce_threshold,
    )


def _set_status(session: Session, subscriber_id: int, status: SubscriberStatus) -> None:
    subscriber = session.get(Subscriber, subscriber_id)
    assert subscriber is not None
    subscriber.status = status
    session.commit()


def test_new_address_becomes_pending(session: Session) -> None:
    sid = _request(session, "Ada@Example.org", topics=["diffusion"])
    subscriber = session.get(Subscriber, sid)
    assert subscriber is not None
    assert (subscriber.email, subscriber.status, subscriber.topics) == (
        "ada@example.org",
        SubscriberStatus.PENDING,
        ["diffusion"],
    )
    assert subscriber.created_at == NOW and subscriber.confirmed_at is None


def test_invalid_address_raises(session: Session) -> None:
    with pytest.raises(InvalidEmail):
        _request(session, "not an address")


def test_suppressed_address_is_not_to_be_mailed(session: Session) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    _set_status(session, sid, SubscriberStatus.SUPPRESSED)
    assert _request(session, "ada@example.org") is None


def test_active_subscriber_keeps_their_preferences(session: Session) -> None:
    sid = _request(session, "ada@example.org", topics=["diffusion"])
    assert sid is not None
    _set_status(session, sid, SubscriberStatus.ACTIVE)
    assert _request(session, "ada@example.org", topics=["cooking"]) == sid
    assert session.get(Subscriber, sid).topics == ["diffusion"]  # type: ignore[union-attr]


def test_confirmation_email_is_a_proper_message(
    session: Session, links: Links, settings: Settings
) -> None:
    backend = MemoryBackend()
    sid = _request(session, "ada@example.org", topics=["diffusion"], frequency="weekly")
    assert sid is not None
    assert _send(session, links, settings, backend, sid)
    [sent] = backend.outbox
    assert sent.recipient == "ada@example.org"
    assert sent.sender == "digest@papers.example.org"
    message = email.message_from_bytes(sent.data, policy=policy.default)
    assert message["From"] == "papermail <digest@papers.example.org>"
    assert message["Message-ID"] == sent.message_id
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "weekly" in text and "diffusion" in text
    url = next(word for word in text.split() if "/confirm/" in word)
    token = url.rsplit("/", 1)[1]
    claims = links.signer.read(Purpose.CONFIRM, token)
    assert (claims.subscriber_id, claims.token_version) == (sid, 1)
    assert backend.opened == backend.closed == 1


def test_no_confirmation_for_suppressed_or_missing(
    session: Session, links: Links, settings: Settings
) -> None:
    backend = MemoryBackend()
    sid = _request(session, "ada@example.org")
    assert sid is not None
    _set_status(session, sid, SubscriberStatus.SUPPRESSED)
    assert not _send(session, links, settings, backend, sid)
    assert not _send(session, links, settings, backend, 12345)
    assert backend.outbox == []


def test_bounced_confirmation_counts_a_bounce(
    session: Session, links: Links, settings: Settings
) -> None:
    backend = MemoryBackend(fail=lambda m: PermanentError("550 no such user", code=550))
    sid = _request(session, "ada@example.org")
    assert sid is not None
    assert not _send(session, links, settings, backend, sid)
    assert session.get(Subscriber, sid).bounce_count == 1  # type: ignore[union-attr]
    assert backend.closed == 1


def test_transient_failure_propagates_for_a_retry(
    session: Session, links: Links, settings: Settings
) -> None:
    backend = MemoryBackend(fail=lambda m: TransientError("421 try later", code=421))
    sid = _request(session, "ada@example.org")
    assert sid is not None
    with pytest.raises(TransientError):
        _send(session, links, settings, backend, sid)
    assert backend.closed == 1


def _confirm(session: Session, links: Links, token: str) -> confirmations.Confirmation:
    result = confirmations.confirm(session, signer=links.signer, token=token, now=NOW)
    session.commit()
    return result


def _confirm_token(links: Links, sid: int, version: int = 1) -> str:
    return links.signer.make(Purpose.CONFIRM, subscriber_id=sid, token_version=version)


def test_a_confirm_link_activates_once(session: Session, links: Links) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    token = _confirm_token(links, sid)
    first = _confirm(session, links, token)
    assert first.outcome is confirmations.Confirmed.ACTIVATED
    ada = first.subscriber
    assert ada.status is SubscriberStatus.ACTIVE and ada.confirmed_at == NOW
    assert ada.token_version == 2  # the link is used up; links mailed from now carry 2
    again = _confirm(session, links, token)
    assert again.outcome is confirmations.Confirmed.USED
    assert ada.token_version == 2 and ada.confirmed_at == NOW


def test_a_used_confirm_link_never_brings_back_someone_who_left(
    session: Session, links: Links
) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    token = _confirm_token(links, sid)
    ada = _confirm(session, links, token).subscriber
    unsubscribe(session, ada, now=NOW)
    session.commit()
    assert _confirm(session, links, token).outcome is confirmations.Confirmed.USED
    assert ada.status is SubscriberStatus.UNSUBSCRIBED


def test_an_active_readers_current_link_is_a_way_in_that_changes_nothing(
    session: Session, links: Links
) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    _set_status(session, sid, SubscriberStatus.ACTIVE)
    for _ in range(2):
        result = _confirm(session, links, _confirm_token(links, sid))
        assert result.outcome is confirmations.Confirmed.ALREADY_ACTIVE
        assert result.subscriber.token_version == 1  # their digests' links keep working


def test_a_confirm_link_refuses_suppressed_and_erased(session: Session, links: Links) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    _set_status(session, sid, SubscriberStatus.SUPPRESSED)
    with pytest.raises(InvalidToken, match="suppressed"):
        _confirm(session, links, _confirm_token(links, sid))
    with pytest.raises(InvalidToken, match="no such subscriber"):
        _confirm(session, links, _confirm_token(links, 12345))
    assert session.get(Subscriber, sid).token_version == 1  # type: ignore[union-attr]


def test_two_requests_racing_with_one_confirm_link_activate_once(
    session_factory: sessionmaker[Session], links: Links
) -> None:
    # A mail scanner and the reader open the link at once: both read version 1 before
    # either commits; the conditional update lets exactly one of them use it.
    with session_factory() as setup:
        sid = _request(setup, "ada@example.org")
    assert sid is not None
    token = _confirm_token(links, sid)
    with session_factory() as first, session_factory() as second:
        seen = second.get(Subscriber, sid)  # held: the identity map keeps it as read
        assert seen is not None and seen.token_version == 1
        won = _confirm(first, links, token)
        lost = _confirm(second, links, token)
    assert won.outcome is confirmations.Confirmed.ACTIVATED
    assert lost.outcome is confirmations.Confirmed.USED
    with session_factory() as check:
        assert check.get(Subscriber, sid).token_version == 2  # type: ignore[union-attr]


def test_signing_up_again_after_leaving_revokes_the_old_links(
    session: Session, links: Links
) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    ada = _confirm(session, links, _confirm_token(links, sid)).subscriber
    unsubscribe(session, ada, now=NOW)
    session.commit()
    assert ada.token_version == 3
    assert _request(session, "ada@example.org", topics=["robotics"]) == sid
    assert ada.token_version == 4 and ada.status is SubscriberStatus.UNSUBSCRIBED
    for stale in (1, 2, 3):
        assert (
            _confirm(session, links, _confirm_token(links, sid, stale)).outcome
            is confirmations.Confirmed.USED
        )
    assert ada.status is SubscriberStatus.UNSUBSCRIBED
    back = _confirm(session, links, _confirm_token(links, sid, 4))
    assert back.outcome is confirmations.Confirmed.ACTIVATED and ada.token_version == 5


def test_signing_up_again_while_pending_or_active_revokes_nothing(
    session: Session, links: Links
) -> None:
    # A stranger can type anyone's address: that must not kill the links they hold.
    sid = _request(session, "ada@example.org")
    _request(session, "ada@example.org")
    assert session.get(Subscriber, sid).token_version == 1  # type: ignore[union-attr]
    assert sid is not None
    _set_status(session, sid, SubscriberStatus.ACTIVE)
    _request(session, "ada@example.org")
    assert session.get(Subscriber, sid).token_version == 1  # type: ignore[union-attr]


def test_the_confirmation_email_carries_the_current_token_version(
    session: Session, links: Links, settings: Settings
) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    ada = _confirm(session, links, _confirm_token(links, sid)).subscriber
    unsubscribe(session, ada, now=NOW)
    session.commit()
    _request(session, "ada@example.org")
    backend = MemoryBackend()
    assert _send(session, links, settings, backend, sid)
    text = email.message_from_bytes(backend.outbox[0].data, policy=policy.default)
    body = text.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    url = next(word for word in body.split() if "/confirm/" in word)
    assert links.signer.read(Purpose.CONFIRM, url.rsplit("/", 1)[1]).token_version == 4


def test_subscriber_for_token_checks_version_except_for_unsubscribe(
    session: Session, links: Links
) -> None:
    sid = _request(session, "ada@example.org")
    assert sid is not None
    subscriber = session.get(Subscriber, sid)
    assert subscriber is not None
    subscriber.token_version = 3
    session.commit()
    for purpose in (Purpose.CONFIRM, Purpose.PREFERENCES):
        stale = links.signer.make(purpose, subscriber_id=sid, token_version=2)
        with pytest.raises(InvalidToken, match="revoked"):
            confirmations.subscriber_for_token(
                session, signer=links.signer, purpose=purpose, token=stale
            )
    stale = links.signer.make(Purpose.UNSUBSCRIBE, subscriber_id=sid, token_version=2)
    assert (
        confirmations.subscriber_for_token(
            session, signer=links.signer, purpose=Purpose.UNSUBSCRIBE, token=stale
        ).id
        == sid
    )


def test_expire_pending_deletes_only_old_unconfirmed_signups(session: Session) -> None:
    old = _request(session, "old@example.org")
    _request(session, "fresh@example.org")
    confirmed = _request(session, "confirmed@example.org")
    gone = _request(session, "left@example.org")
    assert old and confirmed and gone
    for sid, status in (
        (confirmed, SubscriberStatus.ACTIVE),
        (gone, SubscriberStatus.UNSUBSCRIBED),
    ):
        _set_status(session, sid, status)
    for sid in (old, confirmed, gone):
        session.get(Subscriber, sid).created_at = NOW - dt.timedelta(days=30)  # type: ignore[union-attr]
    fresh = session.query(Subscriber).filter_by(email="fresh@example.org").one()
    fresh.created_at = NOW - dt.timedelta(days=6)
    session.commit()
    assert confirmations.expire_pending(session, now=NOW) == 1
    session.commit()
    assert {s.email for s in session.query(Subscriber)} == {
        "fresh@example.org",
        "confirmed@example.org",
        "left@example.org",
    }


def test_resubmitting_a_pending_signup_restarts_its_expiry(session: Session) -> None:
    sid = _request(session, "ada@example.org")
    session.get(Subscriber, sid).created_at = NOW - dt.timedelta(days=6)  # type: ignore[union-attr]
    session.commit()
    _request(session, "ada@example.org")
    assert confirmations.expire_pending(session, now=NOW + dt.timedelta(days=2)) == 0


def test_tasks_and_beat_schedule_are_registered() -> None:
    from workers import tasks
    from workers.celery_app import beat_schedule

    assert tasks.send_confirmation.name == "papermail.send_confirmation"
    assert tasks.expire_pending.name == "papermail.expire_pending"
    schedule = beat_schedule(Settings(_env_file=None))
    assert any(e["task"] == "papermail.expire_pending" for e in schedule.values())


def test_a_concurrent_signup_of_the_same_address_is_not_an_error(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_factory() as first, session_factory() as second:
        first_id = _request(first, "ada@example.org")
        # The second request looked before the first committed, so it saw no row.
        real_scalar, looked = second.scalar, []

        def stale_first_look(*args: object, **kwargs: object) -> object:
            looked.append(1)
            return None if len(looked) == 1 else real_scalar(*args, **kwargs)

        monkeypatch.setattr(second, "scalar", stale_first_look)
        second_id = confirmations.request_subscription(
            second, email="ada@example.org", prefs=Preferences(topics=["x"]), now=NOW
        )
        second.commit()
        assert first_id == second_id
        assert len(looked) == 2  # the insert failed, the retry found the row
        assert second.get(Subscriber, second_id).topics == ["x"]  # type: ignore[union-attr]


def test_a_confirmation_bouncing_past_the_threshold_suppresses_the_address(
    session: Session, links: Links, settings: Settings
) -> None:
    # Otherwise the sign-up form could keep mailing a dead (or hostile) mailbox forever.
    backend = MemoryBackend(fail=lambda m: PermanentError("550 no such user", code=550))
    sid = _request(session, "ada@example.org")
    assert sid is not None
    subscriber = session.get(Subscriber, sid)
    assert subscriber is not None
    subscriber.bounce_count = settings.bounce_threshold - 1
    assert not _send(session, links, settings, backend, sid)
    assert subscriber.status is SubscriberStatus.SUPPRESSED
    assert not _send(session, links, settings, MemoryBackend(), sid)  # never mailed again
