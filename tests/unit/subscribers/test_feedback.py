"""Feedback in the domain: its signed links, recording and undoing marks, muting, the
selection that honours mutes, and the migration that adds it all."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic import command
from itsdangerous import TimestampSigner
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papermail.db import make_engine
from papermail.dbadmin import alembic_config, upgrade
from papermail.models import (
    Edition,
    EditionItem,
    EditionKind,
    Feedback,
    FeedbackDirection,
    Paper,
    Subscriber,
    SubscriberStatus,
    Variant,
)
from papermail.pipeline import ranking
from papermail.pipeline.planning import plan_edition, reader_selection
from papermail.subscribers import feedback
from papermail.subscribers.feedback import MuteKind, Recorded
from papermail.subscribers.tokens import (
    InvalidToken,
    Links,
    Purpose,
    TokenSigner,
    feedback_payloads,
)
from tests.support.migrations import insert_edition, insert_sent_delivery, insert_subscriber

SECRET = "test-secret-key-that-is-long-enough-0123456789"  # noqa: S105 (a test key)
SIGNED_AT = 1_800_000_000
NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
MORE, LESS = FeedbackDirection.MORE, FeedbackDirection.LESS


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    now = [SIGNED_AT]
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now[0])
    return now


# --- tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("paper_id", ["2611.01234", "2611.01234v2", "hep-th/9901001"])
@pytest.mark.parametrize("direction", [MORE, LESS])
def test_a_feedback_token_names_reader_paper_and_direction(
    signer: TokenSigner, paper_id: str, direction: FeedbackDirection
) -> None:
    token = signer.make_feedback(subscriber_id=42, paper_id=paper_id, direction=direction)
    assert "/" not in token and all(c.isalnum() or c in "-_." for c in token)
    claims = signer.read_feedback(token)
    assert (claims.subscriber_id, claims.paper_id, claims.direction) == (42, paper_id, direction)


def test_batch_tokens_are_the_single_ones_and_the_stock_itsdangerous_bytes(
    signer: TokenSigner, frozen: list[int]
) -> None:
    papers = ["2611.00001", "2611.00002", "hep-th/9901001"]
    batch = signer.feedback_tokens(7, payload_suffixes=feedback_payloads(papers))
    singles = [
        signer.make_feedback(subscriber_id=7, paper_id=p, direction=d)
        for p in papers
        for d in (MORE, LESS)
    ]
    assert batch == singles
    stock = TimestampSigner(SECRET, salt="papermail.feedback")
    assert batch[0] == stock.sign(b"7.2611.00001.more").decode()
    assert batch[5] == stock.sign(b"7.hep-th_9901001.less").decode()


@pytest.mark.parametrize("purpose", [Purpose.PREFERENCES, Purpose.UNSUBSCRIBE, Purpose.CONFIRM])
def test_feedback_tokens_are_purpose_bound(signer: TokenSigner, purpose: Purpose) -> None:
    feedback_token = signer.make_feedback(subscriber_id=1, paper_id="2611.00001", direction=MORE)
    with pytest.raises(InvalidToken, match="bad signature"):
        signer.read(purpose, feedback_token)
    other = signer.make(purpose, subscriber_id=1, token_version=1)
    with pytest.raises(InvalidToken, match="bad signature"):
        signer.read_feedback(other)


def test_a_generic_token_of_the_feedback_purpose_is_not_a_feedback_link(
    signer: TokenSigner,
) -> None:
    token = signer.make(Purpose.FEEDBACK, subscriber_id=1, token_version=1)
    with pytest.raises(InvalidToken, match="malformed payload"):
        signer.read_feedback(token)


def test_any_changed_part_is_refused(signer: TokenSigner) -> None:
    token = signer.make_feedback(subscriber_id=12, paper_id="2611.00001", direction=LESS)
    payload, stamp, signature = token.rsplit(".", 2)
    for forged_payload in ("13.2611.00001.less", "12.2611.00002.less", "12.2611.00001.more"):
        with pytest.raises(InvalidToken):
            signer.read_feedback(f"{forged_payload}.{stamp}.{signature}")
    for index in range(len(token)):
        replacement = "A" if token[index] != "A" else "B"
        try:
            claims = signer.read_feedback(token[:index] + replacement + token[index + 1 :])
        except InvalidToken:
            continue
        # base64 padding bits can absorb a change without altering the decoded bytes.
        assert (claims.subscriber_id, claims.paper_id, claims.direction) == (
            12,
            "2611.00001",
            LESS,
        )


@pytest.mark.parametrize("garbage", ["", ".", "a.b.c", "x" * 500, "1.2.3.4.5", "🧪.🧪.🧪"])
def test_garbage_is_an_invalid_token(signer: TokenSigner, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        signer.read_feedback(garbage)


def test_well_signed_but_malformed_payloads_are_refused(frozen: list[int]) -> None:
    stock = TimestampSigner(SECRET, salt="papermail.feedback")
    for payload in (b"x.2611.00001.more", b"1.2611.00001.sideways", b"1..more", b"1.a b.more"):
        with pytest.raises(InvalidToken, match="malformed payload"):
            TokenSigner(SECRET).read_feedback(stock.sign(payload).decode())


def test_feedback_links_expire_after_ninety_days(signer: TokenSigner, frozen: list[int]) -> None:
    token = signer.make_feedback(subscriber_id=5, paper_id="2611.00001", direction=MORE)
    frozen[0] = SIGNED_AT + 89 * 86400
    assert signer.read_feedback(token).subscriber_id == 5
    frozen[0] = SIGNED_AT + 91 * 86400
    with pytest.raises(InvalidToken, match="expired"):
        signer.read_feedback(token)


def test_links_put_the_token_after_the_feedback_prefix(signer: TokenSigner) -> None:
    links = Links("https://papers.example.org", signer)
    assert links.feedback_prefix == "https://papers.example.org/feedback/"
    url = links.feedback(3, "2611.00001", "less")
    assert url.startswith(links.feedback_prefix)
    assert signer.read_feedback(url.removeprefix(links.feedback_prefix)).direction is LESS


def test_a_paper_id_no_link_can_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="no feedback link"):
        feedback_payloads(["2611.00001", "a_b"])


# --- recording, undoing, listing ---------------------------------------------------------------


def _reader(session: Session, email: str = "ada@example.org") -> Subscriber:
    subscriber = Subscriber(email=email, status=SubscriberStatus.ACTIVE)
    session.add(subscriber)
    session.flush()
    return subscriber


def _papers(session: Session, count: int = 3) -> list[str]:
    ids = []
    for n in range(count):
        session.add(
            Paper(
                id=f"2611.{n:05d}",
                title=f"Paper  {n}\nof many",
                authors=[f"Author {n}", "Shared Author"],
                organization=f"Lab {n}",
                upvotes=100 - n,
            )
        )
        ids.append(f"2611.{n:05d}")
    session.flush()
    return ids


def test_record_is_idempotent_and_the_opposite_replaces(session: Session) -> None:
    ada = _reader(session)
    (pid, *_) = _papers(session)
    later = NOW + dt.timedelta(hours=1)
    assert (
        feedback.record(session, subscriber_id=ada.id, paper_id=pid, direction=MORE, now=NOW)
        is Recorded.NEW
    )
    assert (
        feedback.record(session, subscriber_id=ada.id, paper_id=pid, direction=MORE, now=later)
        is Recorded.UNCHANGED
    )
    assert feedback.current(session, subscriber_id=ada.id, paper_id=pid) is MORE
    (row,) = session.scalars(select(Feedback)).all()
    assert row.created_at == NOW  # saying it again is not news
    assert (
        feedback.record(session, subscriber_id=ada.id, paper_id=pid, direction=LESS, now=later)
        is Recorded.REPLACED
    )
    (row,) = session.scalars(select(Feedback)).all()
    assert (row.direction, row.created_at) == (LESS, later)


def test_one_mark_per_reader_and_paper_in_the_schema(session: Session) -> None:
    ada = _reader(session)
    (pid, *_) = _papers(session)
    session.add(Feedback(subscriber_id=ada.id, paper_id=pid, direction=MORE, created_at=NOW))
    session.flush()
    session.add(Feedback(subscriber_id=ada.id, paper_id=pid, direction=LESS, created_at=NOW))
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_mark_on_an_unknown_paper_is_refused(session: Session) -> None:
    ada = _reader(session)
    with pytest.raises(IntegrityError):
        feedback.record(
            session, subscriber_id=ada.id, paper_id="2699.00000", direction=MORE, now=NOW
        )


def test_marked_lists_newest_first_bounded_and_undo_forgets(session: Session) -> None:
    ada = _reader(session)
    bob = _reader(session, "bob@example.org")
    ids = _papers(session)
    for n, pid in enumerate(ids):
        direction = MORE if n % 2 == 0 else LESS
        when = NOW + dt.timedelta(minutes=n)
        feedback.record(session, subscriber_id=ada.id, paper_id=pid, direction=direction, now=when)
    feedback.record(session, subscriber_id=bob.id, paper_id=ids[0], direction=LESS, now=NOW)
    listed = feedback.marked(session, subscriber_id=ada.id)
    assert [m.paper_id for m in listed] == list(reversed(ids))
    assert listed[-1].title == "Paper 0 of many"
    assert [m.paper_id for m in feedback.marked(session, subscriber_id=ada.id, limit=2)] == [
        ids[2],
        ids[1],
    ]
    assert feedback.count_marked(session, subscriber_id=ada.id) == 3
    undone = feedback.undo(session, subscriber_id=ada.id, paper_id=ids[0])
    assert undone is not None and (undone.paper_id, undone.direction) == (ids[0], MORE)
    assert feedback.undo(session, subscriber_id=ada.id, paper_id=ids[0]) is None
    assert feedback.current(session, subscriber_id=bob.id, paper_id=ids[0]) is LESS


def test_erasing_a_reader_erases_their_marks(session: Session) -> None:
    ada = _reader(session)
    (pid, *_) = _papers(session)
    feedback.record(session, subscriber_id=ada.id, paper_id=pid, direction=MORE, now=NOW)
    session.commit()
    session.delete(ada)
    session.commit()
    assert session.scalars(select(Feedback)).all() == []


# --- muting ----------------------------------------------------------------------------------


def test_mute_and_unmute_ignore_case_and_spacing(session: Session) -> None:
    ada = _reader(session)
    assert feedback.mute(
        session, subscriber_id=ada.id, kind=MuteKind.AUTHOR, name=" Ada  Lovelace "
    )
    assert not feedback.mute(
        session, subscriber_id=ada.id, kind=MuteKind.AUTHOR, name="ada lovelace"
    )
    assert feedback.mute(session, subscriber_id=ada.id, kind=MuteKind.ORGANIZATION, name="Lab 1")
    assert ada.muted_authors == ["Ada Lovelace"] and ada.muted_organizations == ["Lab 1"]
    assert feedback.is_muted(ada, MuteKind.AUTHOR, "ADA LOVELACE")
    assert not feedback.is_muted(ada, MuteKind.ORGANIZATION, "Ada Lovelace")
    assert feedback.unmute(session, subscriber_id=ada.id, kind=MuteKind.AUTHOR, name="ada lovelace")
    assert not feedback.unmute(session, subscriber_id=ada.id, kind=MuteKind.AUTHOR, name="nobody")
    session.commit()
    session.expire_all()
    assert ada.muted_authors == [] and ada.muted_organizations == ["Lab 1"]


def test_muted_lists_are_bounded(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback, "MAX_MUTED", 2)
    ada = _reader(session)
    for name in ("A", "B"):
        feedback.mute(session, subscriber_id=ada.id, kind=MuteKind.AUTHOR, name=name)
    with pytest.raises(feedback.TooManyMuted):
        feedback.mute(session, subscriber_id=ada.id, kind=MuteKind.AUTHOR, name="C")
    with pytest.raises(ValueError, match="nothing to mute"):
        feedback.mute(session, subscriber_id=ada.id, kind=MuteKind.ORGANIZATION, name="  ")
    long = "x" * 1000
    feedback.mute(session, subscriber_id=ada.id, kind=MuteKind.ORGANIZATION, name=long)
    assert ada.muted_organizations == ["x" * feedback.MAX_NAME]


def _candidate(
    pid: str, rank: int, *, org: str | None, authors: tuple[str, ...]
) -> ranking.Candidate:
    return ranking.Candidate(
        paper_id=pid,
        rank=rank,
        title=f"{pid} about robotics",
        summary="",
        keywords=(),
        organization=org,
        authors=authors,
    )


def test_select_never_picks_a_muted_author_or_organisation() -> None:
    cands = [
        _candidate("p1", 1, org="Lab One", authors=("Ada Lovelace",)),
        _candidate("p2", 2, org="Lab Two", authors=("Alan Turing", "Grace Hopper")),
        _candidate("p3", 3, org="Lab Three", authors=("Edsger Dijkstra",)),
        _candidate("p4", 4, org=None, authors=()),
    ]
    interests = ranking.Interests(
        max_papers=10,
        topics=("robotics",),
        follow_organizations=("Lab One",),
        follow_authors=("Grace Hopper",),
    )
    assert [p for p, _ in ranking.select(cands, interests)] == ["p1", "p2", "p3", "p4"]
    muted = ranking.Muted(
        authors=frozenset({ranking.name_key("grace  HOPPER")}),
        organizations=frozenset({ranking.name_key("lab one")}),
    )
    # Followed, topic-matching and top-ranked: muted wins over all of it.
    assert [p for p, _ in ranking.select(cands, interests, muted=muted)] == ["p3", "p4"]
    # Muting "Lab" mutes no "Lab One": a mute names one organisation exactly.
    partial = ranking.Muted(organizations=frozenset({"lab"}))
    assert len(ranking.select(cands, interests, muted=partial)) == 4


def test_muted_of_a_subscriber_and_of_raw_planning_values() -> None:
    ada = Subscriber(muted_authors=["Ada  Lovelace"], muted_organizations=["Lab One", " "])
    muted = ranking.Muted.of(ada)
    assert muted == ranking.Muted(
        authors=frozenset({"ada lovelace"}), organizations=frozenset({"lab one"})
    )
    assert not ranking.Muted.of(Subscriber(muted_authors=[], muted_organizations=[]))
    assert ranking.Muted.of(ada) == ranking.Muted.of(
        Subscriber(muted_authors=["ada lovelace"], muted_organizations=["LAB ONE"])
    )  # the same selection, so the same memo key and variant


def test_planning_never_selects_a_muted_paper(session: Session) -> None:
    ids = _papers(session, 4)
    edition = Edition(day=NOW.date(), kind=EditionKind.DAILY, created_at=NOW)
    edition.items = [EditionItem(paper_id=p, rank=n + 1, score=1.0) for n, p in enumerate(ids)]
    session.add(edition)
    _reader(session, "plain@example.org")  # mutes nothing: gets every paper
    ada = _reader(session)
    ada.follow_authors = ["Author 1"]
    feedback.mute(session, subscriber_id=ada.id, kind=MuteKind.AUTHOR, name="author 1")
    feedback.mute(session, subscriber_id=ada.id, kind=MuteKind.ORGANIZATION, name="Lab 2")
    session.commit()
    report = plan_edition(
        session, edition=edition, now=NOW, batch_size=100, publish=lambda _ids: None, due_only=False
    )
    assert report.planned == 2 and report.variants == 2
    selections = {v.key: [pid for pid, _ in v.selection] for v in session.scalars(select(Variant))}
    assert sorted(selections.values()) == sorted([[ids[0], ids[3]], ids])
    # Preview asks planning for the same reader's selection.
    previewed = reader_selection(session, edition=edition, subscriber_id=ada.id)
    assert [pid for pid, _ in previewed] == [ids[0], ids[3]]


def test_muting_everyone_leaves_an_empty_but_valid_digest() -> None:
    cands = [_candidate("p1", 1, org="Lab", authors=("A",))]
    muted = ranking.Muted(organizations=frozenset({"lab"}))
    assert ranking.select(cands, ranking.Interests(max_papers=5), muted=muted) == ()


# --- the migration ---------------------------------------------------------------------------


def test_migration_0003_upgrades_and_downgrades_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'migrate.db'}")  # foreign keys on
    upgrade(engine, "0002")
    with engine.begin() as conn:
        insert_subscriber(conn)
        insert_edition(conn)
        insert_sent_delivery(conn)
    upgrade(engine, "0003")
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT muted_authors, muted_organizations FROM subscribers")
        ).one() == ("[]", "[]")
        names = {ix["name"] for ix in inspect(conn).get_indexes("feedback")}
        assert "ix_feedback_subscriber_created" in names
        uniques = inspect(conn).get_unique_constraints("feedback")
        assert [u["column_names"] for u in uniques] == [["subscriber_id", "paper_id"]]

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
    with engine.connect() as conn:
        inspector = inspect(conn)
        assert "feedback" not in inspector.get_table_names()
        columns = {c["name"] for c in inspector.get_columns("subscribers")}
        assert not columns & {"muted_authors", "muted_organizations"}
        # No copy-and-swap of subscribers: the delivery rows (ON DELETE CASCADE) survive,
        # and so does AUTOINCREMENT (ids are never reused).
        assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar() == 1
        ddl = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'subscribers'")
        ).scalar()
        assert "AUTOINCREMENT" in ddl
    upgrade(engine)  # and back up again
    engine.dispose()
