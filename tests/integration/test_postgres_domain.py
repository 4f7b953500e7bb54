"""The domain on PostgreSQL: the same functions the SQLite unit tests pin, on the production
database (its own insert path for planning, real concurrent claims, timestamptz)."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Callable, Iterator

import pytest
from alembic import command
from psycopg import pq
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from papermail.config import PROJECT_ROOT
from papermail.db import make_engine, make_session_factory
from papermail.dbadmin import alembic_config
from papermail.delivery.memory import MemoryBackend
from papermail.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Feedback,
    FeedbackDirection,
    Paper,
    PaperSnapshot,
    Subscriber,
    SubscriberStatus,
    Variant,
)
from papermail.ops import history, monitoring
from papermail.pipeline import claims, histories, ledger, plan_rows
from papermail.pipeline.claims import claim, claim_rows
from papermail.pipeline.editions import build_edition
from papermail.pipeline.ingest import ingest_papers
from papermail.pipeline.planning import PlanReport, plan_edition, reader_selection
from papermail.pipeline.ratelimit import Unlimited
from papermail.pipeline.redispatch import redispatch_due
from papermail.pipeline.rendering import EditionStore, make_environment
from papermail.pipeline.selections import SelectionJson, variant_key
from papermail.pipeline.sending import SendPolicy, send_batch
from papermail.pipeline.variants import Identity, TemplateSource
from papermail.sources.hf import SAMPLE_DAY, load_sample
from papermail.subscribers import desk
from papermail.subscribers.bounces import BouncePolicy
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.subscribers.tokens import Links, TokenSigner
from tests.support.bounces import soft_bounce

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 11, 27, 7, 30, tzinfo=dt.UTC)
EDITION_DAY = SAMPLE_DAY + dt.timedelta(days=1)


@pytest.fixture
def sessions(clean_db: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(clean_db)
    yield make_session_factory(engine)
    engine.dispose()


def test_migrations_build_exactly_the_models(pg_url: str) -> None:
    command.check(alembic_config(pg_url))  # raises if models and migrations differ


def _seed(sessions: sessionmaker[Session], readers: int) -> int:
    with sessions() as session:
        ingest_papers(session, result=load_sample(), now=NOW)
        for n in range(readers):
            topics = ["diffusion"] if n % 3 == 0 else []
            add_subscriber(
                session,
                email=f"reader{n}@example.org",
                now=NOW,
                confirmed=True,
                prefs=Preferences(topics=topics, max_papers=5),
            )
        result = build_edition(session, day=EDITION_DAY, kind=EditionKind.DAILY, size=30)
        session.commit()
        assert result.edition is not None
        return result.edition.id


def _planned(
    sessions: sessionmaker[Session], *, readers: int, batch_size: int, chunk_size: int = 20_000
) -> list[list[int]]:
    """Readers and the sample edition, planned: the batches planning published."""
    edition_id = _seed(sessions, readers=readers)
    published: list[list[int]] = []
    with sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        plan_edition(
            session,
            edition=edition,
            now=NOW,
            batch_size=batch_size,
            publish=published.append,
            due_only=False,
            chunk_size=chunk_size,
        )
    return published


def test_ingest_twice_updates_in_place_and_snapshots_each_time(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        first = ingest_papers(session, result=load_sample(), now=NOW)
        session.commit()
        second = ingest_papers(session, result=load_sample(), now=NOW + dt.timedelta(hours=1))
        session.commit()
        papers = session.scalar(select(func.count()).select_from(Paper))
        snapshots = session.scalar(select(func.count()).select_from(PaperSnapshot))
    assert (first.inserted, second.inserted, second.updated) == (40, 0, 40)
    assert (papers, snapshots) == (40, 80)


def test_edition_and_planning_are_idempotent(sessions: sessionmaker[Session]) -> None:
    edition_id = _seed(sessions, readers=250)
    published: list[list[int]] = []
    with sessions() as session:
        again = build_edition(session, day=EDITION_DAY, kind=EditionKind.DAILY, size=30)
        assert not again.created and again.edition is not None
        assert again.edition.id == edition_id
        report = plan_edition(
            session,
            edition=again.edition,
            now=NOW,
            batch_size=40,
            publish=published.append,
            due_only=False,
            chunk_size=100,
        )
        replan = plan_edition(
            session,
            edition=again.edition,
            now=NOW,
            batch_size=40,
            publish=published.append,
            due_only=False,
            chunk_size=100,
        )
    ids = [i for batch in published for i in batch]
    assert report.planned == 250 and replan.planned == 0
    assert len(ids) == len(set(ids)) == 250
    assert all(len(batch) <= 40 for batch in published)
    assert report.variants == 2  # the "diffusion" readers and everyone else


def test_concurrent_claims_never_share_a_row(sessions: sessionmaker[Session]) -> None:
    [ids] = _planned(sessions, readers=200, batch_size=500)
    claimed: list[list[int]] = []
    start = threading.Barrier(4)

    def worker() -> None:
        with sessions() as session:
            start.wait()
            claimed.append(claim(session, ids=ids, now=NOW, lease=dt.timedelta(minutes=5)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for got in claimed for i in got]
    assert sorted(everything) == sorted(ids)  # each row claimed by exactly one worker


def test_a_claim_takes_only_claimable_rows_with_their_readers_in_id_order(
    sessions: sessionmaker[Session],
) -> None:
    [batch] = _planned(sessions, readers=8, batch_size=500)
    ids = sorted(batch)
    lease = dt.timedelta(minutes=5)
    sent, live, expired, not_due, due, erased = ids[:6]
    with sessions() as session:
        session.execute(text("UPDATE deliveries SET status = 'sent' WHERE id = :id"), {"id": sent})
        for row_id, status, lease_until, next_at in (
            (live, "sending", NOW + lease, None),
            (expired, "sending", NOW - dt.timedelta(seconds=1), None),
            (not_due, "retry", None, NOW + dt.timedelta(minutes=1)),
            (due, "retry", None, NOW),
        ):
            session.execute(
                text(
                    "UPDATE deliveries SET status = :status, lease_until = :lease_until,"
                    " next_attempt_at = :next_at, attempts = 2 WHERE id = :id"
                ),
                {"id": row_id, "status": status, "lease_until": lease_until, "next_at": next_at},
            )
        gone = session.scalar(select(Delivery.subscriber_id).where(Delivery.id == erased))
        session.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": gone})
        session.commit()
    with sessions() as session:
        rows = claim_rows(session, ids=list(reversed(ids)), now=NOW, lease=lease)
    expected = [expired, due, *ids[6:]]
    assert [r.id for r in rows] == expected  # in id order, whatever order they came in
    assert [r.attempts for r in rows] == [3, 3] + [1] * len(ids[6:])
    with sessions() as session:
        readers = {
            s.id: s for s in session.scalars(select(Subscriber).where(Subscriber.id != gone))
        }
        deliveries = {d.id: d for d in session.scalars(select(Delivery))}
        for row in rows:
            reader = readers[row.subscriber_id]
            assert (row.email, row.token_version) == (reader.email, reader.token_version)
            assert row.subscriber_status is SubscriberStatus.ACTIVE
            assert row.variant_key == deliveries[row.id].variant_key
            assert deliveries[row.id].status is DeliveryStatus.SENDING
            assert deliveries[row.id].lease_until == NOW + lease
        assert deliveries[live].lease_until == NOW + lease  # someone else's lease: untouched
        assert deliveries[not_due].status is DeliveryStatus.RETRY
        assert erased not in deliveries  # the reader's rows went with them
    with sessions() as session:
        assert claim_rows(session, ids=ids, now=NOW, lease=lease) == []  # all taken now


def _send(  # type: ignore[no-untyped-def]
    sessions: sessionmaker[Session], redis, ids: list[int], backend, *, now: dt.datetime = NOW
) -> None:
    links = Links("https://papers.example.org", TokenSigner("k" * 40))
    identity = Identity(
        mail_from="papermail <d@papers.example.org>",
        envelope_from="d@papers.example.org",
        domain="papers.example.org",
        list_name="papermail",
    )
    templates = TemplateSource(
        store=EditionStore(redis, ttl_seconds=600),
        env=make_environment(PROJECT_ROOT / "templates"),
        links=links,
        identity=identity,
    )
    with sessions() as session:
        send_batch(
            session,
            delivery_ids=ids,
            backend=backend,
            templates=templates,
            limiter=Unlimited(),
            links=links,
            identity=identity,
            policy=SendPolicy(),
            clock=lambda: now,
        )


def _statuses(sessions: sessionmaker[Session]) -> dict[DeliveryStatus, int]:
    with sessions() as session:
        return dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()  # type: ignore[arg-type]
        )


def test_send_twice_delivers_once_on_postgres(sessions: sessionmaker[Session], redis) -> None:  # type: ignore[no-untyped-def]
    published = _planned(sessions, readers=30, batch_size=100)
    backend = MemoryBackend()
    for _ in range(2):
        _send(sessions, redis, published[0], backend)
    assert len(backend.outbox) == 30
    assert len({m.recipient for m in backend.outbox}) == 30
    assert _statuses(sessions) == {DeliveryStatus.SENT: 30}


class _Watching:
    """A backend that, as it accepts each message, looks at the ledger from outside."""

    def __init__(self, sessions: sessionmaker[Session], on_accept) -> None:  # type: ignore[no-untyped-def]
        self.sessions, self.on_accept = sessions, on_accept
        self.accepted: list[str] = []

    def open(self) -> _Watching:
        return self

    def send(self, message, *, before_accept=lambda: None) -> None:  # type: ignore[no-untyped-def]
        before_accept()
        self.on_accept(self)
        self.accepted.append(message.recipient)

    def close(self) -> None:
        return None


def test_each_message_is_accepted_only_once_every_earlier_mark_has_committed(
    sessions: sessionmaker[Session],
    redis,  # type: ignore[no-untyped-def]
) -> None:
    # Marks are pipelined: one commits while the next message goes out. At the moment
    # a message can be accepted, every message accepted before it is durably "sent".
    published = _planned(sessions, readers=30, batch_size=100)
    with sessions() as session:  # every mark takes 50 ms to commit: a race would show
        session.execute(
            text(
                "CREATE FUNCTION slow_mark() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$"
            )
        )
        session.execute(
            text(
                "CREATE TRIGGER slow_mark BEFORE UPDATE ON deliveries FOR EACH ROW "
                "WHEN (NEW.status = 'sent') EXECUTE FUNCTION slow_mark()"
            )
        )
        session.commit()
    seen: list[tuple[int, int]] = []

    def check(backend: _Watching) -> None:
        seen.append((len(backend.accepted), _statuses(sessions).get(DeliveryStatus.SENT, 0)))

    backend = _Watching(sessions, check)
    try:
        _send(sessions, redis, published[0], backend)
    finally:  # the schema outlives this test (clean_db only empties tables)
        with sessions() as session:
            session.execute(text("DROP TRIGGER slow_mark ON deliveries"))
            session.execute(text("DROP FUNCTION slow_mark()"))
            session.commit()
    assert len(seen) == 30
    assert all(sent == accepted for accepted, sent in seen), seen
    assert _statuses(sessions) == {DeliveryStatus.SENT: 30}


def test_a_mark_that_cannot_commit_stops_the_batch_and_costs_one_copy_at_most(
    sessions: sessionmaker[Session],
    redis,  # type: ignore[no-untyped-def]
) -> None:
    from papermail.pipeline.ledger import LedgerError

    published = _planned(sessions, readers=30, batch_size=100)

    def kill_the_ledger_connection(backend: _Watching) -> None:
        if len(backend.accepted) == 5:
            with sessions() as other:
                other.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND query LIKE 'UPDATE deliveries SET status = ''sent''%'"
                    )
                )

    first = _Watching(sessions, kill_the_ledger_connection)
    with pytest.raises(LedgerError):
        _send(sessions, redis, published[0], first)
    assert 5 <= len(first.accepted) <= 6  # stopped right there, not at the end
    # Once the batch's lease has run out, its rows are claimed again and sent.
    second = MemoryBackend()
    _send(sessions, redis, published[0], second, now=NOW + dt.timedelta(minutes=6))
    everyone = first.accepted + [m.recipient for m in second.outbox]
    assert len(set(everyone)) == 30  # nobody lost
    assert len(everyone) - 30 <= 1  # the message whose mark was lost, at most, went twice
    assert _statuses(sessions) == {DeliveryStatus.SENT: 30}


@pytest.mark.parametrize("chunk_size", [20_000, 400], ids=["one chunk", "many chunks"])
def test_claims_read_only_their_own_rows_right_after_a_big_planning_run(
    sessions: sessionmaker[Session], chunk_size: int
) -> None:
    # Statistics taken before planning say nothing is pending; PostgreSQL then claimed
    # through the status index, reading every pending row of the edition per batch.
    # In many chunks, planning re-analyzes only as its rows double: the last batch
    # (planned after the last ANALYZE) must still be claimed by primary key.
    published = _planned(sessions, readers=3000, batch_size=100, chunk_size=chunk_size)
    with sessions() as session:
        # The statement a send batch runs, explained.
        explained = text("EXPLAIN (ANALYZE, FORMAT JSON) " + claims.PG_CLAIM.text)
        plan = session.execute(
            explained, {"ids": published[-2], "now": NOW, "lease_until": NOW}
        ).scalar_one()
        session.rollback()
    scan = plan[0]["Plan"]["Plans"][0]
    rows_read = scan.get("Actual Rows", 0) + scan.get("Rows Removed by Filter", 0)
    assert scan.get("Index Name") == "deliveries_pkey", scan
    assert rows_read <= 100


def test_a_sent_mark_reads_only_its_own_row_while_its_batch_is_in_flight(
    sessions: sessionmaker[Session],
) -> None:
    # Statistics never see 'sending': rows pass through it between two ANALYZEs. PostgreSQL
    # then took the status index for the mark, as selective as the primary key by those
    # statistics, and read every row of the batch still in flight for each message.
    published = _planned(sessions, readers=300, batch_size=100)
    with sessions() as session:
        session.execute(text("ANALYZE deliveries"))  # as autovacuum would: none 'sending'
        in_flight = claim(session, ids=published[1], now=NOW, lease=dt.timedelta(minutes=5))
        assert len(in_flight) == 100
        # As the ledger runs it: prepared (so on a generic plan after five runs), through
        # libpq's simple protocol, where $1 belongs to the statement being prepared.
        pg = session.connection().connection.driver_connection.pgconn  # type: ignore[union-attr]
        pg.exec_(b"SET plan_cache_mode = force_generic_plan")
        prepared = pg.exec_(
            b"PREPARE probe_mark (timestamptz, text, bigint) AS " + ledger.MARK_SENT_SQL
        )
        assert prepared.status == pq.ExecStatus.COMMAND_OK, prepared.error_message
        row = int(in_flight[-1])  # a literal: EXECUTE takes no parameter of its own
        explain = f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE probe_mark (now(), 'probe', {row})"
        plan = session.execute(text(explain)).scalar_one()
        session.rollback()
    scan = plan[0]["Plan"]["Plans"][0]
    assert scan.get("Index Name") == "deliveries_pkey", scan
    assert scan.get("Actual Rows", 0) + scan.get("Rows Removed by Filter", 0) == 1


def test_sent_rows_leave_the_status_index_and_only_they_enter_the_sent_at_index(
    sessions: sessionmaker[Session],
    redis,  # type: ignore[no-untyped-def]
) -> None:
    published = _planned(sessions, readers=300, batch_size=100)
    _send(sessions, redis, published[0], MemoryBackend())
    with sessions() as session:
        claim(session, ids=published[1], now=NOW, lease=dt.timedelta(minutes=5))
    with sessions.kw["bind"].connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        # VACUUM counts each index's live entries (reltuples), dead versions cleaned out.
        conn.exec_driver_sql("VACUUM (INDEX_CLEANUP ON) deliveries")
        entries = dict(
            conn.exec_driver_sql(
                "SELECT c.relname, c.reltuples::int FROM pg_class c"
                " WHERE c.relname IN ('ix_deliveries_status_next', 'ix_deliveries_sent_at')"
            ).all()
        )
    # 100 sent, 100 in flight, 100 pending: the status index holds the 200 unsent rows, the
    # sent_at index the 100 sent ones; neither holds all 300 as before.
    assert entries == {"ix_deliveries_status_next": 200, "ix_deliveries_sent_at": 100}


def test_the_ledgers_readers_can_use_the_partial_indexes(
    sessions: sessionmaker[Session],
) -> None:
    # A partial index serves a query only where PostgreSQL can prove the query's rows
    # satisfy its predicate. Each of these reads what the indexes were made for, on a
    # ledger with a history (the unsent rows a few among many sent ones); the statements
    # are captured as they run and explained with table scans ruled out.
    published = _planned(sessions, readers=30, batch_size=10)
    assert published
    engine = sessions.kw["bind"]
    with engine.begin() as conn:  # 200 earlier daily editions, sent to all 30 readers
        conn.execute(
            text(
                "INSERT INTO editions (day, kind, created_at)"
                " SELECT CAST(:day AS date) - n, 'daily', :now FROM generate_series(1, 200) n"
            ),
            {"day": EDITION_DAY, "now": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (subscriber_id, edition_id, variant_key, status,"
                " attempts, created_at, sent_at)"
                " SELECT d.subscriber_id, e.id, d.variant_key, 'sent', 1, :now,"
                " CAST(:now AS timestamptz) - (CAST(:day AS date) - e.day) * interval '1 day'"
                " FROM deliveries d CROSS JOIN editions e WHERE e.day < :day"
            ),
            {"day": EDITION_DAY, "now": NOW},
        )
        conn.execute(text("ANALYZE deliveries"))
    captured: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "deliveries" in statement:
            captured.append((statement, parameters))

    # Each reader, and the index it must be able to use.
    reads: dict[str, tuple[Callable[[Session], object], str]] = {
        "redispatch": (
            lambda s: redispatch_due(s, now=NOW, batch_size=10, publish=lambda ids: None),
            "ix_deliveries_status_next",
        ),
        "backlog": (monitoring.backlog, "ix_deliveries_status_next"),
        "failed rows": (history.failed_rows, "ix_deliveries_status_next"),
        "send rate": (
            lambda s: monitoring.send_rate(s, now=NOW, window=dt.timedelta(hours=1)),
            "ix_deliveries_sent_at",
        ),
    }
    for name, (read, index) in reads.items():
        captured.clear()
        event.listen(engine, "before_cursor_execute", capture)
        try:
            with sessions() as session:
                read(session)
                session.rollback()
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        assert captured, name
        statement, parameters = captured[0]
        with engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
        assert index in plan, f"{name}:\n{plan}"


def test_marks_survive_a_connection_that_forgot_its_prepared_statements(
    clean_db: str,
    redis,  # type: ignore[no-untyped-def]
) -> None:
    # psycopg sends DEALLOCATE ALL after a ROLLBACK on a connection where it prepared
    # statements itself, and the pool hands that connection to the next batch's ledger.
    engine = create_engine(clean_db, pool_size=2, max_overflow=0)
    sessions = make_session_factory(engine)
    published = _planned(sessions, readers=30, batch_size=10)
    backend = MemoryBackend()
    _send(sessions, redis, published[0], backend)
    both = [engine.connect(), engine.connect()]  # every connection the pool has
    for connection in both:
        connection.exec_driver_sql("DEALLOCATE ALL")
        connection.close()
    _send(sessions, redis, published[1], backend)
    statuses = _statuses(sessions)
    engine.dispose()
    assert len(backend.outbox) == 20
    assert statuses == {DeliveryStatus.SENT: 20, DeliveryStatus.PENDING: 10}


def _plan(
    sessions: sessionmaker[Session],
    edition_id: int,
    *,
    publish: Callable[[list[int]], None],
    batch_size: int,
) -> PlanReport:
    """Plan the edition for everyone, ten readers a chunk (so chunks overlap in flight)."""
    with sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return plan_edition(
            session,
            edition=edition,
            now=NOW,
            batch_size=batch_size,
            publish=publish,
            due_only=False,
            chunk_size=10,
        )


def test_planning_with_feedback_picks_as_a_preview_does_and_publishes_committed_rows(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL's own paths: marks read as arrays (the last MAX_MARKS, oldest first),
    # chunks written by a thread of their own while the next is picked. Each reader's
    # planned selection must be what the one-reader path (previews, test sends) gives.
    monkeypatch.setattr(histories, "MAX_MARKS", 4)
    edition_id = _seed(sessions, readers=90)
    rng = random.Random(5)
    expected: dict[int, tuple[list[str], list[str]]] = {}
    with sessions() as session:
        papers = sorted(session.scalars(select(Paper.id)))
        ids = sorted(session.scalars(select(Subscriber.id)))
        for n, sid in enumerate(ids):
            marks = [(pid, rng.random() < 0.7) for pid in rng.sample(papers, rng.randint(0, 9))]
            for minute, (pid, up) in enumerate(marks):
                session.add(
                    Feedback(
                        subscriber_id=sid,
                        paper_id=pid,
                        direction=FeedbackDirection.MORE if up else FeedbackDirection.LESS,
                        created_at=NOW - dt.timedelta(hours=1) + dt.timedelta(minutes=minute),
                    )
                )
            recent = marks[-4:]
            expected[sid] = ([p for p, up in recent if up], [p for p, up in recent if not up])
            session.get(Subscriber, sid).relevance_weight = (n % 5) / 4  # type: ignore[union-attr]
        session.commit()

        found = histories.reader_feedback(session, ids[0], ids[-1], papers={})
        assert {
            sid: ([p.paper_id for p in liked], [p.paper_id for p in disliked])
            for sid, (liked, disliked) in found.items()
        } == {sid: marks for sid, marks in expected.items() if marks != ([], [])}

    committed: list[int] = []

    def publish(batch: list[int]) -> None:
        with sessions() as other:  # another connection sees every row a batch names
            visible = other.scalar(select(func.count()).where(Delivery.id.in_(batch)))
        assert visible == len(batch)
        committed.extend(batch)

    report = _plan(sessions, edition_id, publish=publish, batch_size=7)
    assert report.planned == len(committed) == 90
    assert report.variants > 30  # feedback and weights tell readers apart
    with sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        planned = session.execute(
            select(Delivery.subscriber_id, Variant.selection).join(
                Variant, Variant.key == Delivery.variant_key
            )
        ).all()
        for sid, selection in planned:
            alone = reader_selection(session, edition=edition, subscriber_id=sid)
            assert [tuple(pick) for pick in selection] == list(alone)
            liked, disliked = expected[sid]
            assert not {pid for pid, _why in alone} & {*liked, *disliked}


def test_a_chunks_rows_go_in_as_binary_arrays_and_come_back_exactly(
    sessions: sessionmaker[Session],
) -> None:
    # The PostgreSQL insert sends keys, formats and selections' JSON as binary arrays: the
    # stored selections must be the picks themselves, through quotes, backslashes, a
    # newline, a NUL, non-ASCII and brackets; writing the same chunk again adds nothing.
    edition_id = _seed(sessions, readers=3)
    awkward = [
        (("2501.00001", 'Similar to “A "quoted" \\ title\n”, which you liked'),),
        (("2501.00002", "Matches your topic “nul\x00byte”"), ("2501.00003", "é中😀")),
        (("2501.00003", '"],["2501.00004","#4 trending'),),
    ]
    encode = SelectionJson()
    variants = [
        plan_rows.NewVariant(variant_key(edition_id, fmt, encode(picks)), fmt, picks, encode(picks))
        for picks, fmt in zip(awkward, ["html", "text", "html"], strict=True)
    ]
    with sessions() as session:
        readers = sorted(session.scalars(select(Subscriber.id)))
        values = [(sid, v.key) for sid, v in zip(readers, variants, strict=True)]
        created = plan_rows.insert_rows(session, variants, values, edition_id=edition_id, now=NOW)
        session.commit()
        again = plan_rows.insert_rows(session, variants, values, edition_id=edition_id, now=NOW)
        session.commit()
        stored = {v.key: (v.format.value, v.selection) for v in session.scalars(select(Variant))}
        rows = session.execute(
            select(Delivery.id, Delivery.subscriber_id, Delivery.variant_key)
        ).all()

        assert again == []
        assert sorted((sid, key) for _id, sid, key in rows) == values
        assert sorted(created) == sorted((row_id, key) for row_id, _sid, key in rows)
        assert stored == {v.key: (v.format, [list(pick) for pick in v.selection]) for v in variants}


def test_a_chunk_that_cannot_be_written_stops_the_plan_and_a_replan_finishes_it(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    edition_id = _seed(sessions, readers=50)
    real, calls = plan_rows.insert_rows, []

    def full_disk(*args: object, **kwargs: object) -> plan_rows.Created:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_rows, "insert_rows", full_disk)
    published: list[list[int]] = []
    with pytest.raises(RuntimeError, match="disk full"):
        _plan(sessions, edition_id, publish=published.append, batch_size=4)
    with sessions() as session:
        written = set(session.scalars(select(Delivery.id)))
    sent = {i for batch in published for i in batch}
    assert len(written) == 20  # the two chunks before the failure, whole
    assert sent <= written  # nothing published that is not committed

    monkeypatch.setattr(plan_rows, "insert_rows", real)
    report = _plan(sessions, edition_id, publish=published.append, batch_size=4)
    assert report.planned == 30 and report.deliveries == 50


def test_an_unsuppressed_address_starts_its_soft_score_again_on_postgres(
    sessions: sessionmaker[Session],
) -> None:
    """The score's query reads the audit log (timestamptz against timestamptz)."""
    policy = BouncePolicy(score_threshold=2.5, soft_weight=1.0, decay_days=7.0)
    with sessions() as session:
        ada = Subscriber(email="ada@example.org", status=SubscriberStatus.ACTIVE, confirmed_at=NOW)
        session.add(ada)
        session.flush()

        def soft(at: dt.datetime) -> tuple[float, bool]:
            return soft_bounce(session, policy, ada, at)

        hour = dt.timedelta(hours=1)
        assert [soft(NOW + n * hour)[1] for n in (1, 2, 3)] == [False, False, True]
        session.refresh(ada)
        desk.unsuppress(session, ada, actor="ops", reason="emptied", now=NOW + 4 * hour)
        session.commit()
        score, suppressed = soft(NOW + 5 * hour)
        assert score == pytest.approx(1.0) and not suppressed
        session.commit()
