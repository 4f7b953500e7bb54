"""The ledger: every planned delivery is sent at most once, and the row says what happened."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import jinja2
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from papermail.config import Settings
from papermail.delivery.base import (
    BackendUnavailable,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from papermail.delivery.memory import MemoryBackend
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionItem,
    EditionKind,
    MailFormat,
    Subscriber,
    SubscriberStatus,
    Variant,
)
from papermail.pipeline import rendering
from papermail.pipeline.claims import claim
from papermail.pipeline.editions import build_edition
from papermail.pipeline.ingest import ingest_papers
from papermail.pipeline.messages import make_message_id
from papermail.pipeline.planning import plan_edition
from papermail.pipeline.ratelimit import RateLimiter, Unlimited
from papermail.pipeline.rendering import EditionStore, make_environment
from papermail.pipeline.sending import (
    STATUS_CHECK_INTERVAL,
    BatchReport,
    SendPolicy,
    send_batch,
)
from papermail.pipeline.variants import Identity, TemplateSource, render_once
from papermail.sources.hf import load_sample
from papermail.subscribers.tokens import Links, Purpose
from tests.conftest import FIXED_NOW

DAY = dt.date(2026, 11, 27)
T0 = dt.datetime(2026, 11, 27, 7, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=300)


class Clock:
    """A settable clock; sending code reads time only through it."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@dataclass
class World:
    session: Session
    sessions: sessionmaker[Session]
    edition: Edition
    links: Links
    identity: Identity
    env: jinja2.Environment
    store: EditionStore
    clock: Clock = field(default_factory=Clock)

    def subscribe(self, email_address: str, **fields: Any) -> Subscriber:
        fields.setdefault("status", SubscriberStatus.ACTIVE)
        row = Subscriber(email=email_address, **fields)
        self.session.add(row)
        self.session.commit()
        return row

    def plan(self) -> list[int]:
        published: list[int] = []
        plan_edition(
            self.session,
            edition=self.edition,
            now=self.clock(),
            batch_size=1000,
            publish=published.extend,
            due_only=False,
        )
        return sorted(published)

    def templates(self) -> TemplateSource:
        return TemplateSource(
            store=self.store, env=self.env, links=self.links, identity=self.identity
        )

    def send(
        self,
        ids: list[int],
        backend: MemoryBackend | None = None,
        *,
        policy: SendPolicy | None = None,
        paused: Callable[[], bool] = lambda: False,
        templates: TemplateSource | None = None,
        limiter: RateLimiter | None = None,
    ) -> BatchReport:
        return send_batch(
            self.session,
            delivery_ids=ids,
            backend=backend if backend is not None else MemoryBackend(),
            templates=templates or self.templates(),
            limiter=limiter or Unlimited(),
            links=self.links,
            identity=self.identity,
            policy=policy or SendPolicy(),
            clock=self.clock,
            paused=paused,
        )

    def rows(self) -> list[Delivery]:
        self.session.expire_all()
        return list(self.session.scalars(select(Delivery).order_by(Delivery.id)))

    def row(self, delivery_id: int) -> Delivery:
        self.session.expire_all()
        found = self.session.get(Delivery, delivery_id)
        assert found is not None
        return found

    def subscriber(self, subscriber_id: int) -> Subscriber:
        self.session.expire_all()
        found = self.session.get(Subscriber, subscriber_id)
        assert found is not None
        return found


@pytest.fixture
def world(
    session: Session,
    session_factory: sessionmaker[Session],
    redis: fakeredis.FakeRedis,
    links: Links,
    settings: Settings,
) -> World:
    ingest_papers(session, result=load_sample(), now=FIXED_NOW)
    edition = build_edition(session, day=DAY, kind=EditionKind.DAILY, size=20).edition
    assert edition is not None
    session.commit()
    return World(
        session=session,
        sessions=session_factory,
        edition=edition,
        links=links,
        identity=Identity(
            mail_from=settings.mail_from,
            envelope_from=settings.sender_address,
            domain=settings.mail_domain,
            list_name=settings.list_name,
        ),
        env=make_environment(settings.templates_dir),
        store=EditionStore(redis, ttl_seconds=3600),
    )


def planned(world: World, count: int, **fields: Any) -> list[int]:
    for i in range(count):
        world.subscribe(f"reader{i:02d}@example.org", **fields)
    return world.plan()


def fail_for(prefix: str, error: Exception) -> Callable[[OutgoingMessage], Exception | None]:
    return lambda message: error if message.recipient.startswith(prefix) else None


def parse(message: OutgoingMessage) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


# --- the happy path -------------------------------------------------------------------------


def test_sends_one_message_per_row_and_marks_it_sent(world: World) -> None:
    ids = planned(world, 3)
    backend = MemoryBackend()
    report = world.send(ids, backend)
    assert (report.claimed, report.sent, report.retried, report.failed) == (3, 3, 0, 0)
    assert sorted(backend.recipients) == [f"reader{i:02d}@example.org" for i in range(3)]
    by_recipient = {m.recipient: m for m in backend.outbox}
    for row in world.rows():
        assert row.status is DeliveryStatus.SENT
        assert row.attempts == 1
        assert row.sent_at == T0
        assert row.lease_until is None
        assert row.last_error is None
        assert row.message_id == make_message_id(
            domain="papers.example.org", edition_id=world.edition.id, delivery_id=row.id
        )
        message = by_recipient[world.subscriber(row.subscriber_id).email]
        assert message.message_id == row.message_id
        assert parse(message)["Message-ID"] == row.message_id
        assert message.sender == "digest@papers.example.org"
    assert backend.opened == backend.closed == 1


def test_each_message_carries_its_own_subscribers_unsubscribe_link(world: World) -> None:
    ids = planned(world, 2)
    backend = MemoryBackend()
    world.send(ids, backend)
    for message in backend.outbox:
        parsed = parse(message)
        subscriber_id = world.session.scalar(
            select(Subscriber.id).where(Subscriber.email == message.recipient)
        )
        assert parsed["To"] == message.recipient
        url = str(parsed["List-Unsubscribe"]).strip("<>")
        assert url.startswith("https://papers.example.org/unsubscribe/")
        claims = world.links.signer.read(Purpose.UNSUBSCRIBE, url.rsplit("/", 1)[1])
        assert claims.subscriber_id == subscriber_id
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html_part = parsed.get_body(("html",))
        assert html_part is not None and message.recipient in html_part.get_content()


def test_text_subscribers_get_text_only_mail(world: World) -> None:
    world.subscribe("plain@example.org", format=MailFormat.TEXT)
    backend = MemoryBackend()
    world.send(world.plan(), backend)
    [message] = backend.outbox
    assert parse(message).get_content_type() == "text/plain"


def test_second_send_of_same_edition_sends_nothing(world: World) -> None:
    ids = planned(world, 3)
    backend = MemoryBackend()
    world.send(ids, backend)
    again = world.send(ids, backend)
    assert again.claimed == 0 and again.sent == 0
    assert len(backend.outbox) == 3
    world.clock.advance(dt.timedelta(days=1))  # no lease or retry clock brings it back
    assert world.send(ids, backend).claimed == 0
    assert len(backend.outbox) == 3


def test_unknown_ids_are_ignored(world: World) -> None:
    ids = planned(world, 1)
    backend = MemoryBackend()
    report = world.send([*ids, 999_999], backend)
    assert report.claimed == 1 and len(backend.outbox) == 1


# --- claims and leases ----------------------------------------------------------------------


def test_claim_is_exclusive(world: World) -> None:
    ids = planned(world, 3)
    first = claim(world.session, ids=ids, now=T0, lease=LEASE)
    with world.sessions() as other:
        second = claim(other, ids=ids, now=T0, lease=LEASE)
    assert first == ids
    assert second == []
    for row in world.rows():
        assert row.status is DeliveryStatus.SENDING
        assert row.lease_until == T0 + LEASE
        assert row.attempts == 1


def test_live_lease_is_not_reclaimable_and_expired_lease_is(world: World) -> None:
    ids = planned(world, 2)
    claim(world.session, ids=ids, now=T0, lease=LEASE)
    assert (
        claim(world.session, ids=ids, now=T0 + LEASE - dt.timedelta(seconds=1), lease=LEASE) == []
    )
    assert claim(world.session, ids=ids, now=T0 + LEASE, lease=LEASE) == []
    later = T0 + LEASE + dt.timedelta(seconds=1)
    assert claim(world.session, ids=ids, now=later, lease=LEASE) == ids
    assert {row.attempts for row in world.rows()} == {2}


def test_rows_of_a_crashed_worker_are_sent_once_after_the_lease(world: World) -> None:
    ids = planned(world, 2)
    claim(world.session, ids=ids, now=T0, lease=LEASE)  # the worker died after claiming
    backend = MemoryBackend()
    assert world.send(ids, backend).claimed == 0
    world.clock.advance(LEASE + dt.timedelta(seconds=1))
    report = world.send(ids, backend)
    assert report.sent == 2
    assert len(backend.outbox) == 2
    assert {row.status for row in world.rows()} == {DeliveryStatus.SENT}


def test_batch_near_the_end_of_its_lease_hands_the_rest_back(
    world: World,
) -> None:
    ids = planned(world, 5)
    backend = MemoryBackend()

    def slow_server(message: OutgoingMessage) -> None:
        if len(backend.outbox) == 1:  # the second message takes four and a half minutes
            world.clock.advance(dt.timedelta(seconds=271))
        return None

    backend.fail = slow_server
    report = world.send(ids, backend)
    assert (report.sent, report.released) == (2, 3)
    # Still inside its lease, the batch hands the rest straight back, attempts unspent,
    # so the next batch sends them at once: exactly once each.
    rows = world.rows()
    assert [row.status for row in rows] == [DeliveryStatus.SENT] * 2 + [DeliveryStatus.PENDING] * 3
    assert [row.attempts for row in rows[2:]] == [0, 0, 0]
    backend.fail = None
    assert world.send(ids, backend).sent == 3
    assert sorted(backend.recipients) == [f"reader{i:02d}@example.org" for i in range(5)]


def test_a_short_lease_still_sends(world: World) -> None:
    # The smallest lease Settings allows is 10 s: shorter than the 30 s safety margin.
    ids = planned(world, 2)
    backend = MemoryBackend()
    report = world.send(ids, backend, policy=SendPolicy(lease_seconds=10))
    assert report.sent == 2


# --- transient failures -----------------------------------------------------------------


def test_transient_error_schedules_a_retry_with_backoff(world: World) -> None:
    [delivery_id] = planned(world, 1)
    backend = MemoryBackend(fail=fail_for("", TransientError("451 try later", code=451)))
    policy = SendPolicy(retry_base_seconds=60, max_attempts=5)
    report = world.send([delivery_id], backend, policy=policy)
    assert (report.sent, report.retried, report.failed) == (0, 1, 0)
    row = world.row(delivery_id)
    assert row.status is DeliveryStatus.RETRY
    assert row.attempts == 1
    assert row.lease_until is None
    assert row.last_error == "451 try later"
    assert row.next_attempt_at is not None
    assert T0 + dt.timedelta(seconds=30) <= row.next_attempt_at <= T0 + dt.timedelta(seconds=90)


def test_a_retry_is_not_claimed_before_it_is_due(world: World) -> None:
    [delivery_id] = planned(world, 1)
    backend = MemoryBackend(fail=fail_for("", TransientError("451")))
    world.send([delivery_id], backend)
    due = world.row(delivery_id).next_attempt_at
    assert due is not None
    world.clock.now = due - dt.timedelta(seconds=1)
    assert world.send([delivery_id], backend).claimed == 0
    world.clock.now = due
    backend.fail = None
    report = world.send([delivery_id], backend)
    assert report.sent == 1
    row = world.row(delivery_id)
    assert row.status is DeliveryStatus.SENT
    assert row.attempts == 2
    assert row.last_error is None
    # Same Message-ID on every attempt: a receiver can drop a duplicate.
    assert backend.outbox[0].message_id == make_message_id(
        domain="papers.example.org", edition_id=world.edition.id, delivery_id=delivery_id
    )


def test_backoff_grows_with_attempts_then_fails_after_max_attempts(world: World) -> None:
    [delivery_id] = planned(world, 1)
    backend = MemoryBackend(fail=fail_for("", TransientError("421 busy")))
    policy = SendPolicy(retry_base_seconds=60, max_attempts=4)
    waits = []
    for attempt in range(1, 4):
        started = world.clock()
        assert world.send([delivery_id], backend, policy=policy).retried == 1
        row = world.row(delivery_id)
        assert (row.status, row.attempts) == (DeliveryStatus.RETRY, attempt)
        assert row.next_attempt_at is not None
        waits.append((row.next_attempt_at - started).total_seconds())
        world.clock.now = row.next_attempt_at
    # Base 60 s doubling, +-50% jitter: [30, 90], [60, 180], [120, 360].
    for wait, base in zip(waits, (60, 120, 240), strict=True):
        assert base * 0.5 <= wait <= base * 1.5
    report = world.send([delivery_id], backend, policy=policy)
    assert (report.retried, report.failed) == (0, 1)
    row = world.row(delivery_id)
    assert row.status is DeliveryStatus.FAILED
    assert row.attempts == 4
    assert row.last_error is not None and row.last_error.startswith("gave up after 4 attempts")
    assert world.subscriber(row.subscriber_id).bounce_count == 0  # not a bounce
    world.clock.advance(dt.timedelta(days=1))
    assert world.send([delivery_id], backend, policy=policy).claimed == 0


def test_backoff_doubles_is_jittered_and_capped() -> None:
    policy = SendPolicy(retry_base_seconds=10, retry_max_seconds=100)
    rng = random.Random(5)
    for attempts, base in [(0, 10), (1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (30, 100)]:
        for _ in range(50):
            wait = policy.backoff(attempts, rng).total_seconds()
            assert base * 0.5 <= wait <= base * 1.5, (attempts, wait)
    spread = {policy.backoff(3, rng) for _ in range(20)}
    assert len(spread) > 1  # jittered, so one outage's retries do not stampede


# --- permanent failures -----------------------------------------------------------------


def test_permanent_error_fails_the_row_counts_a_bounce_and_the_rest_is_sent(
    world: World,
) -> None:
    world.subscribe("alice@example.org")
    bouncing = world.subscribe("bounce@example.org")
    world.subscribe("carol@example.org")
    ids = world.plan()
    backend = MemoryBackend(fail=fail_for("bounce", PermanentError("550 no such user", code=550)))
    report = world.send(ids, backend)
    assert (report.sent, report.failed, report.retried) == (2, 1, 0)
    assert sorted(backend.recipients) == ["alice@example.org", "carol@example.org"]
    [failed] = [row for row in world.rows() if row.subscriber_id == bouncing.id]
    assert failed.status is DeliveryStatus.FAILED
    assert failed.last_error == "bounced: 550 no such user"
    assert failed.lease_until is None
    after = world.subscriber(bouncing.id)
    assert after.bounce_count == 1
    assert after.status is SubscriberStatus.ACTIVE  # below the threshold of 3


def test_reaching_the_bounce_threshold_suppresses_the_subscriber(world: World) -> None:
    bouncing = world.subscribe("bounce@example.org", bounce_count=2)
    ids = world.plan()
    backend = MemoryBackend(fail=fail_for("bounce", PermanentError("550", code=550)))
    world.send(ids, backend, policy=SendPolicy(bounce_threshold=3))
    after = world.subscriber(bouncing.id)
    assert after.bounce_count == 3
    assert after.status is SubscriberStatus.SUPPRESSED


def test_a_suppressed_subscriber_is_never_mailed_again(world: World) -> None:
    bouncing = world.subscribe("bounce@example.org", bounce_count=2)
    ids = world.plan()
    world.send(ids, MemoryBackend(fail=fail_for("bounce", PermanentError("550"))))
    weekly = build_edition(world.session, day=DAY, kind=EditionKind.WEEKLY, size=5).edition
    assert weekly is not None
    world.session.execute(update(Subscriber).values(frequency="weekly"))
    world.session.commit()
    world.edition = weekly
    backend = MemoryBackend()
    world.send(world.plan(), backend)
    assert world.subscriber(bouncing.id).status is SubscriberStatus.SUPPRESSED
    assert backend.outbox == []


# --- subscribers who left ---------------------------------------------------------------


@pytest.mark.parametrize(
    "status", [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED, SubscriberStatus.PENDING]
)
def test_row_of_a_subscriber_who_is_no_longer_active_is_skipped(
    world: World, status: SubscriberStatus
) -> None:
    stays = world.subscribe("stays@example.org")
    leaves = world.subscribe("leaves@example.org")
    ids = world.plan()
    world.session.execute(
        update(Subscriber).where(Subscriber.id == leaves.id).values(status=status)
    )
    world.session.commit()
    backend = MemoryBackend()
    report = world.send(ids, backend)
    assert (report.sent, report.skipped) == (1, 1)
    assert backend.recipients == [stays.email]
    [skipped] = [row for row in world.rows() if row.subscriber_id == leaves.id]
    assert skipped.status is DeliveryStatus.SKIPPED
    assert skipped.last_error == f"subscriber is {status.value}"


# --- pausing ------------------------------------------------------------------------------


def test_pause_before_the_batch_claims_nothing(world: World) -> None:
    ids = planned(world, 3)
    backend = MemoryBackend()
    report = world.send(ids, backend, paused=lambda: True)
    assert report.paused is True
    assert report.claimed == 0
    assert backend.outbox == []
    assert {(row.status, row.attempts) for row in world.rows()} == {(DeliveryStatus.PENDING, 0)}


def test_pause_mid_batch_releases_the_rest_and_a_later_batch_sends_them_once(
    world: World,
) -> None:
    ids = planned(world, 25)
    calls = []

    def paused_after_first_check() -> bool:
        calls.append(1)
        return len(calls) > 1

    backend = MemoryBackend()
    report = world.send(ids, backend, paused=paused_after_first_check)
    assert report.paused is True
    sent_first = report.sent
    assert 1 <= sent_first < 25
    assert report.released == 25 - sent_first
    rows = world.rows()
    released = [row for row in rows if row.status is not DeliveryStatus.SENT]
    assert len(released) == report.released
    for row in released:
        assert row.status is DeliveryStatus.PENDING
        assert row.attempts == 0  # as if never claimed
        assert row.lease_until is None
    assert len(backend.outbox) == sent_first
    later = world.send(ids, backend)
    assert later.claimed == later.sent == 25 - sent_first
    assert sorted(backend.recipients) == sorted({m.recipient for m in backend.outbox})
    assert len(backend.outbox) == 25
    assert {row.status for row in world.rows()} == {DeliveryStatus.SENT}


# --- variants and rendering -------------------------------------------------------------


class BrokenFor(TemplateSource):
    """Rendering blows up for one variant (a template bug, bad data)."""

    def __init__(self, broken_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broken_key = broken_key

    def get(self, session: Session, key: str, *, edition: Edition) -> Any:
        if key == self.broken_key:
            raise RuntimeError("template exploded")
        return super().get(session, key, edition=edition)


def test_an_exception_while_rendering_does_not_sink_the_batch(world: World) -> None:
    world.subscribe("a@example.org")
    broken = world.subscribe("b@example.org", topics=["video"])
    world.subscribe("c@example.org")
    ids = world.plan()
    [broken_row] = [row for row in world.rows() if row.subscriber_id == broken.id]
    templates = BrokenFor(
        broken_row.variant_key,
        store=world.store,
        env=world.env,
        links=world.links,
        identity=world.identity,
    )
    backend = MemoryBackend()
    report = world.send(ids, backend, templates=templates)
    assert (report.sent, report.retried) == (2, 1)
    assert sorted(backend.recipients) == ["a@example.org", "c@example.org"]
    row = world.row(broken_row.id)
    assert row.status is DeliveryStatus.RETRY
    assert row.last_error == "template exploded"


def test_an_edition_missing_from_redis_is_rendered_from_the_database(world: World) -> None:
    ids = planned(world, 2)
    key = EditionStore.key(world.edition.id)
    assert world.store.get(key) is None
    backend = MemoryBackend()
    assert world.send(ids, backend).sent == 2
    assert world.store.get(key) is not None  # stored for the next process
    text = parse(backend.outbox[0]).get_body(("plain",))
    assert text is not None and "More like this" in text.get_content()


def test_an_edition_in_redis_is_not_rendered_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = planned(world, 2)
    once = {
        "edition": world.edition,
        "store": world.store,
        "env": world.env,
        "links": world.links,
        "list_name": world.identity.list_name,
    }
    assert render_once(world.session, **once) is True
    assert render_once(world.session, **once) is False

    def no_render(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered although Redis had the edition")

    monkeypatch.setattr("papermail.pipeline.variants.render_edition_from_db", no_render)
    assert world.send(ids, MemoryBackend()).sent == 2


def test_every_reader_of_an_edition_is_assembled_from_one_render(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Distinct selections, one MJML compile: readers' digests are joined from pieces.
    for size in (3, 5, 8):
        world.subscribe(f"size{size}@example.org", max_papers=size)
    world.subscribe("text@example.org", format=MailFormat.TEXT)
    ids = world.plan()
    assert len({row.variant_key for row in world.rows()}) == 4
    compiles: list[str] = []
    real = rendering._compile_mjml
    monkeypatch.setattr(
        rendering, "_compile_mjml", lambda source: (compiles.append(source), real(source))[1]
    )
    backend = MemoryBackend()
    assert world.send(ids, backend).sent == 4
    assert len(compiles) == 1
    bodies = [parse(m).get_body(("plain",)) for m in backend.outbox]
    counts = sorted(b.get_content().count("\n    Why: ") for b in bodies if b is not None)
    assert counts == [3, 5, 8, 10]


def test_messages_of_one_variant_share_body_and_differ_in_personal_parts(world: World) -> None:
    ids = planned(world, 2)
    backend = MemoryBackend()
    world.send(ids, backend)
    first, second = (parse(m) for m in backend.outbox)
    assert first["Subject"] == second["Subject"]
    assert first["To"] != second["To"]
    assert first["List-Unsubscribe"] != second["List-Unsubscribe"]


def test_a_row_with_a_stored_message_id_is_sent_under_it(world: World) -> None:
    # operations.resend stores a fresh Message-ID on the row; the send must use it.
    [delivery_id] = planned(world, 1)
    row = world.session.get(Delivery, delivery_id)
    assert row is not None
    row.message_id = "<papermail.e1.d1.rdeadbeef@papers.example.org>"
    world.session.commit()
    backend = MemoryBackend()
    world.send([delivery_id], backend)
    assert [m.message_id for m in backend.outbox] == [row.message_id]
    assert b"Message-ID: <papermail.e1.d1.rdeadbeef@papers.example.org>" in backend.outbox[0].data


def test_an_unreachable_rate_limiter_hands_the_batch_back_instead_of_stranding_it(
    world: World,
) -> None:
    # Redis down mid-batch: the rows must go back to pending now, not sit in "sending"
    # until the lease runs out.
    ids = planned(world, 3)

    class Unreachable:
        calls = 0

        def acquire(self) -> None:
            self.calls += 1
            if self.calls > 1:
                raise ConnectionError("redis: connection refused")

    backend = MemoryBackend()
    report = world.send(ids, backend, limiter=Unreachable())
    assert (report.sent, report.released, report.coordination_down) == (1, 2, True)
    assert [world.row(i).status for i in ids[1:]] == [DeliveryStatus.PENDING] * 2
    assert world.send(ids, backend).claimed == 0  # they wait a retry interval first
    world.clock.advance(dt.timedelta(seconds=91))  # backoff(1) is at most 1.5 x 60 s
    later = world.send(ids, backend)
    assert later.sent == 2
    assert len(backend.outbox) == 3


def test_a_runtime_encodes_each_variant_once_across_batches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from papermail.config import Settings
    from papermail.wiring import Wiring

    rt = Wiring(Settings(_env_file=None, var_dir=tmp_path / "var"))
    assert rt.templates() is rt.templates()


def test_a_relay_outage_stops_the_batch_without_spending_anyones_attempts(world: World) -> None:
    # Connection refused (or login refused): no message can go, so no row should fail for
    # it. The batch hands everything back and the rows wait one retry interval.
    ids = planned(world, 5)
    backend = MemoryBackend()
    outage = BackendUnavailable("cannot reach 127.0.0.1:25: connection refused")
    backend.fail = lambda message: outage if len(backend.outbox) == 1 else None
    report = world.send(ids, backend)

    assert (report.sent, report.failed, report.retried, report.released) == (1, 0, 0, 4)
    assert report.backend_down
    rows = world.rows()
    assert [r.status for r in rows] == [DeliveryStatus.SENT] + [DeliveryStatus.PENDING] * 4
    assert [r.attempts for r in rows[1:]] == [0] * 4
    assert all(r.next_attempt_at is not None and r.next_attempt_at > T0 for r in rows[1:])
    assert world.send(ids, backend).claimed == 0  # not hammering the relay meanwhile

    world.clock.advance(dt.timedelta(seconds=91))
    backend.fail = None
    assert world.send(ids, backend).sent == 4
    assert sorted(backend.recipients) == [f"reader{i:02d}@example.org" for i in range(5)]


def test_someone_who_unsubscribes_mid_batch_gets_nothing_more(world: World) -> None:
    ids = planned(world, 30)
    backend = MemoryBackend()
    leaver = world.row(ids[-1]).subscriber_id

    def unsubscribe_after_the_third(message: OutgoingMessage) -> None:
        if len(backend.outbox) == 3:
            with world.sessions() as other:  # the web app, in another process
                other.execute(
                    update(Subscriber)
                    .where(Subscriber.id == leaver)
                    .values(status=SubscriberStatus.UNSUBSCRIBED)
                )
                other.commit()
            world.clock.advance(STATUS_CHECK_INTERVAL)  # statuses are read once a second
        return None

    backend.fail = unsubscribe_after_the_third
    report = world.send(ids, backend)
    assert (report.sent, report.skipped) == (29, 1)
    assert world.row(ids[-1]).status is DeliveryStatus.SKIPPED
    leaver_email = world.session.get(Subscriber, leaver).email  # type: ignore[union-attr]
    assert leaver_email not in backend.recipients
    assert len(backend.recipients) == 29


def test_the_edition_cache_stays_within_its_byte_budget_and_evicts_the_oldest(
    world: World, session: Session
) -> None:
    later = build_edition(session, day=DAY, kind=EditionKind.WEEKLY, size=20).edition
    assert later is not None
    sizes = [
        world.templates().encoded(world.session, edition, MailFormat.HTML).size
        for edition in (world.edition, later)
    ]
    small = TemplateSource(  # room for either, not both
        store=world.store,
        env=world.env,
        links=world.links,
        identity=world.identity,
        max_bytes=max(sizes) + 1,
    )
    small.encoded(world.session, world.edition, MailFormat.HTML)
    small.encoded(world.session, later, MailFormat.HTML)
    assert small._bytes <= small.max_bytes
    assert list(small._editions) == [f"{later.id}:html"]


def test_a_process_encodes_each_edition_once_however_many_readers(world: World) -> None:
    ids = planned(world, 3)
    templates = world.templates()
    world.send(ids[:1], templates=templates)
    encoded = templates.encoded(world.session, world.edition, MailFormat.HTML)
    world.send(ids[1:], templates=templates)
    assert templates.encoded(world.session, world.edition, MailFormat.HTML) is encoded


def test_the_selection_cache_keeps_a_few_batches_and_never_splits_one(
    world: World, session: Session
) -> None:
    """Per-reader selections are read once each: held without bound, a sending process
    grew by ~2 KB a reader. A batch larger than the bound still keeps all of its own."""
    paper = session.scalars(select(EditionItem.paper_id)).first()
    keys = [f"reader-{n}" for n in range(7)]
    session.add_all(
        Variant(key=k, edition_id=world.edition.id, format="html", selection=[[paper, k]])
        for k in keys
    )
    session.commit()
    templates = TemplateSource(
        store=world.store,
        env=world.env,
        links=world.links,
        identity=world.identity,
        max_selections=3,
    )
    templates.prefetch(session, keys[:5])  # one batch of five: all five held
    assert set(templates._selections) == set(keys[:5])
    templates.prefetch(session, keys[5:])  # the next batch: the oldest make room
    assert list(templates._selections) == [keys[4], keys[5], keys[6]]
    template = templates.get(session, keys[0], edition=world.edition)  # read again when asked
    assert template._reasons == [keys[0]]
    assert len(templates._selections) == 3
