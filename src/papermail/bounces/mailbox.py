"""Polling a mailbox that collects bounces: `papermail bounces poll` and its beat task.

For a bounce domain whose mail lands in an ordinary mailbox (a catch-all for
``bounces+*@``): IMAP over TLS (imaplib.IMAP4_SSL) or POP3 over TLS (poplib.POP3_SSL).
Each message is handed to the processor once; then it is deleted (the default) or, on
IMAP with ``delete=False``, flagged \\Seen and never read again. A message over the size
cap is not downloaded (it is done with, as refused); one the processor failed on (the
database was away) is left for the next poll. At most ``limit`` messages a poll.
"""

from __future__ import annotations

import imaplib
import logging
import poplib
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from papermail.bounces.processor import Outcome

log = logging.getLogger(__name__)

LIMIT = 500  # messages a poll; the rest wait for the next one
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class Mailbox(Protocol):
    def messages(self) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
        """(id, size in bytes, fetch the message) for each message to read."""
        ...

    def done(self, message: str) -> None:
        """Never read this message again (delete or flag it)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class MailboxConfig:
    protocol: str  # "imap" | "pop3"
    host: str
    user: str
    password: str
    port: int | None = None
    folder: str = "INBOX"
    delete: bool = True
    timeout: float = 30.0


@dataclass
class PollReport:
    read: int = 0
    refused: int = 0  # not a bounce we act on (the reasons are logged); done with
    failed: int = 0  # the processor raised; left for the next poll
    outcome: Outcome = field(default_factory=Outcome)

    def as_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "stored": self.outcome.stored,
            "duplicates": self.outcome.duplicates,
            "refused": self.refused,
            "failed": self.failed,
        }


def poll(
    mailbox: Mailbox,
    *,
    process: Callable[[bytes], Outcome],
    max_bytes: int,
    limit: int = LIMIT,
) -> PollReport:
    """Read up to ``limit`` messages into the processor; close the mailbox."""
    report = PollReport()
    try:
        for count, (message, size, fetch) in enumerate(mailbox.messages()):
            if count >= limit:
                break
            report.read += 1
            if size > max_bytes:
                log.info("bounce mailbox: message %s refused: too large (%d bytes)", message, size)
                report.refused += 1
                mailbox.done(message)
                continue
            try:
                outcome = process(fetch())
            except Exception:
                log.exception("bounce mailbox: message %s failed; left for the next poll", message)
                report.failed += 1
                continue
            report.outcome.add(outcome)
            report.refused += 0 if outcome.accepted else 1
            mailbox.done(message)
    finally:
        mailbox.close()
    return report


class ImapMailbox:
    """One folder over IMAP; messages by UID. Not deleting: only unseen ones are read."""

    def __init__(self, client: imaplib.IMAP4, *, folder: str = "INBOX", delete: bool = True):
        self.client = client
        self.delete = delete
        typ, _ = client.select(_quoted(folder))
        if typ != "OK":
            raise imaplib.IMAP4.error(f"cannot select folder {folder!r}")

    def messages(self) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
        typ, data = self.client.uid("SEARCH", "ALL" if self.delete else "UNSEEN")
        if typ != "OK":
            raise imaplib.IMAP4.error("SEARCH failed")
        for raw_uid in (data[0] or b"").split():
            uid = raw_uid.decode("ascii")
            yield uid, self._size(uid), _fetcher(self.client, uid)

    def done(self, message: str) -> None:
        flag = r"(\Deleted)" if self.delete else r"(\Seen)"
        self.client.uid("STORE", message, "+FLAGS", flag)

    def close(self) -> None:
        try:
            if self.delete:
                self.client.expunge()
            self.client.close()
        finally:
            self.client.logout()

    def _size(self, uid: str) -> int:
        typ, data = self.client.uid("FETCH", uid, "(RFC822.SIZE)")
        first = data[0] if typ == "OK" and data else None
        match = _SIZE.search(first if isinstance(first, bytes) else b"")
        return int(match[1]) if match else 0


def _fetcher(client: imaplib.IMAP4, uid: str) -> Callable[[], bytes]:
    def fetch() -> bytes:
        # BODY.PEEK: reading does not set \Seen (done() decides what happens to it).
        typ, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
        part = data[0] if typ == "OK" and data else None
        if not isinstance(part, tuple) or len(part) < 2:
            raise imaplib.IMAP4.error(f"FETCH of message {uid!r} failed")
        return bytes(part[1])

    return fetch


class Pop3Mailbox:
    """A POP3 maildrop: every message is read, and deleted once done (POP3 has no flags)."""

    def __init__(self, client: poplib.POP3) -> None:
        self.client = client

    def messages(self) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
        _response, listing, _octets = self.client.list()
        for line in listing:
            number, _, size = line.decode("ascii").partition(" ")
            yield number, int(size or 0), _retriever(self.client, number)

    def done(self, message: str) -> None:
        self.client.dele(message)

    def close(self) -> None:
        self.client.quit()  # the deletions take effect now


def _retriever(client: poplib.POP3, number: str) -> Callable[[], bytes]:
    def retrieve() -> bytes:
        _response, lines, _octets = client.retr(number)
        return b"\r\n".join(lines) + b"\r\n"

    return retrieve


def open_mailbox(config: MailboxConfig) -> Mailbox:
    """Connect over TLS (certificates verified) and log in."""
    context = ssl.create_default_context()
    if config.protocol == "pop3":
        pop = poplib.POP3_SSL(
            config.host, config.port or 995, context=context, timeout=config.timeout
        )
        pop.user(config.user)
        pop.pass_(config.password)
        return Pop3Mailbox(pop)
    imap = imaplib.IMAP4_SSL(
        config.host, config.port or 993, ssl_context=context, timeout=config.timeout
    )
    imap.login(config.user, config.password)
    return ImapMailbox(imap, folder=config.folder, delete=config.delete)


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
