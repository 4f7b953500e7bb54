"""Shared fixtures and helpers for the web tests (no tests here).

The app runs on SQLite + fakeredis with the memory mail backend; confirmation
emails are sent inline, so a test reads them from ``web.outbox`` right after
the request that caused them.
"""

from __future__ import annotations

import datetime as dt
import email
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage

from fastapi import FastAPI
from fastapi.testclient import TestClient

from papermail.config import Settings
from papermail.db import session_scope
from papermail.delivery.memory import MemoryBackend
from papermail.models import Base, Edition, EditionItem, EditionKind, Paper, Subscriber
from papermail.stages import InlineDispatcher
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.signup_limits import SignupLimits
from papermail.subscribers.subscriptions import add_subscriber
from papermail.subscribers.tokens import Purpose
from papermail.web.app import create_app
from papermail.wiring import Wiring

BASE = "https://papers.example.org"
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(1)</script>'
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_CONFIRM = re.compile(re.escape(BASE) + r"(/confirm/[A-Za-z0-9_.\-]+)")


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Web:
    runtime: Wiring
    app: FastAPI
    client: TestClient
    clock: Clock
    backend: MemoryBackend

    @property
    def outbox(self) -> list[EmailMessage]:
        return [_parse(m.data) for m in self.backend.outbox]

    def token(self, purpose: Purpose, subscriber: Subscriber | int, version: int = 1) -> str:
        sid = subscriber if isinstance(subscriber, int) else subscriber.id
        return self.runtime.links.signer.make(purpose, subscriber_id=sid, token_version=version)

    def subscriber(self, address: str) -> Subscriber | None:
        with self.runtime.sessions() as session:
            return session.query(Subscriber).filter_by(email=address).one_or_none()

    def add(self, address: str, *, confirmed: bool = True, **prefs: object) -> Subscriber:
        with session_scope(self.runtime.sessions) as session:
            subscriber, _ = add_subscriber(
                session,
                email=address,
                prefs=Preferences(**prefs),
                now=self.clock(),
                confirmed=confirmed,
            )
            return subscriber

    def confirm(self, path: str, *, follow_redirects: bool = True):  # type: ignore[no-untyped-def]
        """What a person does with the emailed link: open it, then press the button."""
        page = self.client.get(path, follow_redirects=False)
        if page.status_code != 200 or 'action="/confirm/' not in page.text:
            return page  # an error, "already used", or a way in: nothing to press
        return self.client.post(path, follow_redirects=follow_redirects)

    def csrf(self, path: str = "/") -> str:
        return csrf_in(self.client.get(path).text)

    def subscribe(self, address: str, **fields: str):  # type: ignore[no-untyped-def]
        data = {
            "email": address,
            "topics": "",
            "frequency": "daily",
            "csrf_token": self.csrf(),
        } | fields
        return self.client.post("/subscribe", data=data)


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def csrf_in(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no CSRF field"
    return match[1]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def confirm_path(message: EmailMessage) -> str:
    match = _CONFIRM.search(text_of(message))
    assert match, "no confirm link in the email"
    return match[1]


def make_web(settings: Settings, *, limits: SignupLimits | None = None) -> Web:
    runtime = Wiring(settings.model_copy(update={"mail_backend": "memory"}))
    Base.metadata.create_all(runtime.engine)
    clock = Clock()
    app = create_app(
        runtime, dispatcher=InlineDispatcher(runtime, clock=clock), limits=limits, clock=clock
    )
    client = TestClient(app, base_url="https://testserver")
    backend = runtime.backend
    assert isinstance(backend, MemoryBackend)
    return Web(runtime, app, client, clock, backend)


def running_web(settings: Settings) -> Iterator[Web]:
    """For each module's ``web`` fixture: ``yield from running_web(settings)``."""
    made = make_web(settings)
    with made.client:
        yield made
    made.runtime.engine.dispose()


def seed_edition(
    web: Web,
    *,
    day: dt.date = dt.date(2026, 11, 26),
    kind: EditionKind = EditionKind.DAILY,
    papers: int = 5,
    prefix: str = "2611",
    hostile: bool = False,
) -> int:
    """An edition of ``papers`` papers; topics rotate so selections differ."""
    topics = ["diffusion", "robotics", "reinforcement learning"]
    with session_scope(web.runtime.sessions) as session:
        rows = []
        for n in range(papers):
            pid = f"{prefix}.{n:05d}"
            paper = session.get(Paper, pid) or Paper(
                id=pid,
                title=f"Paper {n} on {topics[n % 3]}",
                summary=f"A study of {topics[n % 3]}.",
                authors=["Ada Lovelace", "Alan Turing"],
                upvotes=100 - n,
                num_comments=n,
                organization="Example Lab",
                ai_keywords=[topics[n % 3]],
                submitted_on_daily_at=dt.datetime.combine(day, dt.time(3), tzinfo=dt.UTC),
            )
            if hostile and n == 0:
                paper.title = HOSTILE
                paper.github_repo = "javascript:alert(1)"
            session.add(paper)
            rows.append(paper)
        edition = Edition(day=day, kind=kind, created_at=NOW)
        edition.items = [
            EditionItem(paper_id=p.id, rank=i + 1, score=1.0 / (i + 1)) for i, p in enumerate(rows)
        ]
        session.add(edition)
        session.flush()
        return edition.id
