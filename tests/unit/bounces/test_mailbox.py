"""`papermail bounces poll`: IMAP and POP3 mailboxes (stand-ins for imaplib and poplib),
each message to the processor once, then deleted or flagged."""

from __future__ import annotations

import imaplib
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from papermail import bounce_stages
from papermail.bounces.mailbox import ImapMailbox, Mailbox, MailboxConfig, Pop3Mailbox, poll
from papermail.bounces.processor import Outcome
from papermail.bounces.verp import Verp
from papermail.config import Settings
from papermail.db import session_scope
from papermail.models import BounceEvent, BounceSource, Subscriber, SubscriberStatus
from papermail.wiring import Wiring
from tests.unit.bounces.conftest import BOUNCE_DOMAIN, add_delivery, add_subscriber, fixture


class FakeImap:
    """What ImapMailbox asks of imaplib.IMAP4, over a dict of UID -> (message, flags)."""

    def __init__(self, messages: dict[str, bytes]) -> None:
        self.messages = {uid: (raw, set()) for uid, raw in messages.items()}
        self.selected: str | None = None
        self.expunged = self.closed = self.logged_out = False

    def select(self, folder: str) -> tuple[str, list[bytes]]:
        self.selected = folder
        return "OK", [str(len(self.messages)).encode()]

    def uid(self, command: str, *args: Any) -> tuple[str, list[Any]]:
        if command == "SEARCH":
            wanted = [
                u for u, (_, f) in self.messages.items() if args[0] == "ALL" or "\\Seen" not in f
            ]
            return "OK", [" ".join(wanted).encode()]
        uid = args[0]
        raw, flags = self.messages[uid]
        if command == "FETCH" and args[1] == "(RFC822.SIZE)":
            return "OK", [f"1 (UID {uid} RFC822.SIZE {len(raw)})".encode()]
        if command == "FETCH":
            assert args[1] == "(BODY.PEEK[])"  # never marks a message read by itself
            return "OK", [(f"1 (UID {uid} BODY[] {{{len(raw)}}}".encode(), raw), b")"]
        if command == "STORE":
            flags.add(args[2].strip("()"))
            return "OK", []
        raise AssertionError(command)

    def expunge(self) -> tuple[str, list[bytes]]:
        self.expunged = True
        self.messages = {u: m for u, m in self.messages.items() if "\\Deleted" not in m[1]}
        return "OK", []

    def close(self) -> tuple[str, list[bytes]]:
        self.closed = True
        return "OK", []

    def logout(self) -> tuple[str, list[bytes]]:
        self.logged_out = True
        return "BYE", []


class FakePop3:
    """What Pop3Mailbox asks of poplib.POP3."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = dict(enumerate(messages, start=1))
        self.deleted: set[int] = set()
        self.quit_called = False

    def list(self) -> tuple[bytes, list[bytes], int]:
        listing = [f"{n} {len(raw)}".encode() for n, raw in self.messages.items()]
        return b"+OK", listing, 0

    def retr(self, which: str) -> tuple[bytes, list[bytes], int]:
        raw = self.messages[int(which)]
        return b"+OK", raw.replace(b"\r\n", b"\n").split(b"\n"), len(raw)

    def dele(self, which: str) -> bytes:
        self.deleted.add(int(which))
        return b"+OK"

    def quit(self) -> bytes:
        self.quit_called = True
        for n in self.deleted:
            del self.messages[n]
        return b"+OK"


def _counting(outcome: Outcome | Exception) -> tuple[list[bytes], Any]:
    seen: list[bytes] = []

    def process(raw: bytes) -> Outcome:
        seen.append(raw)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return seen, process


def test_imap_reads_each_message_once_and_deletes_it() -> None:
    imap = FakeImap({"11": b"one", "12": b"two"})
    seen, process = _counting(Outcome(stored=1))

    report = poll(ImapMailbox(imap, folder="Bounces"), process=process, max_bytes=1024)  # type: ignore[arg-type]

    assert seen == [b"one", b"two"] and report.as_dict()["stored"] == 2
    assert imap.selected == '"Bounces"'
    assert imap.messages == {} and imap.expunged and imap.logged_out


def test_imap_without_deleting_flags_and_skips_what_it_has_read() -> None:
    imap = FakeImap({"11": b"one"})
    seen, process = _counting(Outcome(stored=1))

    poll(ImapMailbox(imap, delete=False), process=process, max_bytes=1024)  # type: ignore[arg-type]
    poll(ImapMailbox(imap, delete=False), process=process, max_bytes=1024)  # type: ignore[arg-type]

    assert seen == [b"one"]
    assert imap.messages["11"][1] == {"\\Seen"} and not imap.expunged


def test_a_message_over_the_cap_is_never_downloaded() -> None:
    imap = FakeImap({"11": b"x" * 5000, "12": b"small"})
    seen, process = _counting(Outcome(stored=1))

    report = poll(ImapMailbox(imap), process=process, max_bytes=1024)  # type: ignore[arg-type]

    assert seen == [b"small"]
    assert (report.read, report.refused) == (2, 1)
    assert imap.messages == {}  # done with, both


def test_a_message_the_processor_failed_on_stays_for_the_next_poll() -> None:
    pop = FakePop3([b"one", b"two"])
    seen, process = _counting(ConnectionError("database away"))

    report = poll(Pop3Mailbox(pop), process=process, max_bytes=1024)  # type: ignore[arg-type]

    assert report.failed == 2 and pop.deleted == set() and pop.quit_called
    assert sorted(pop.messages) == [1, 2]


def test_pop3_deletes_what_it_read_and_stops_at_the_limit() -> None:
    pop = FakePop3([b"a", b"b", b"c"])
    seen, process = _counting(Outcome(refused=["not a bounce"]))

    report = poll(Pop3Mailbox(pop), process=process, max_bytes=1024, limit=2)  # type: ignore[arg-type]

    assert seen == [b"a\r\n", b"b\r\n"]
    assert (report.read, report.refused) == (2, 2)
    assert sorted(pop.messages) == [3]


def test_a_broken_folder_is_an_imap_error() -> None:
    imap = FakeImap({})
    imap.select = lambda folder: ("NO", [b"no such folder"])  # type: ignore[method-assign]

    with pytest.raises(imaplib.IMAP4.error):
        ImapMailbox(imap, folder="Nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_the_poll_stage_takes_bounces_from_the_configured_mailbox(
    settings: Settings, verp: Verp, protocol: str
) -> None:
    configured = settings.model_copy(
        update={
            "bounce_domain": BOUNCE_DOMAIN,
            "bounce_mailbox_protocol": protocol,
            "bounce_mailbox_host": "imap.example.org",
            "bounce_mailbox_user": "bounces",
        }
    )
    w = Wiring(configured)
    from papermail.models import Base

    Base.metadata.create_all(w.engine)
    with session_scope(w.sessions) as session:
        delivery = add_delivery(session, add_subscriber(session, "ada@example.org"))
    raw = fixture("postfix_hard.mail", token=w.verp.token(delivery_id=delivery.id))
    opened: list[MailboxConfig] = []

    def open_mailbox(config: MailboxConfig):  # type: ignore[no-untyped-def]
        opened.append(config)
        return (
            ImapMailbox(FakeImap({"1": raw}))
            if protocol == "imap"
            else Pop3Mailbox(FakePop3([raw]))
        )  # type: ignore[arg-type]

    report = bounce_stages.poll_bounces(w, open_mailbox=open_mailbox)

    assert report is not None and report.as_dict()["stored"] == 1
    assert opened[0].host == "imap.example.org" and opened[0].protocol == protocol
    with w.sessions() as session:
        [event] = session.scalars(select(BounceEvent)).all()
        assert event.source is (BounceSource.IMAP if protocol == "imap" else BounceSource.POP3)
        subscriber = session.get(Subscriber, event.subscriber_id)
        assert subscriber is not None and subscriber.status is SubscriberStatus.SUPPRESSED
    w.engine.dispose()


def test_without_a_mailbox_the_poll_stage_does_nothing(
    settings: Settings, session: Session
) -> None:
    def never(_config: MailboxConfig) -> Mailbox:
        pytest.fail("opened")

    assert bounce_stages.poll_bounces(Wiring(settings), open_mailbox=never) is None
