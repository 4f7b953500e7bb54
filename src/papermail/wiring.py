"""Wiring: turn Settings into the objects domain functions take as arguments.

Domain code never reads Settings; the CLI, Celery tasks and the web app build one
Wiring per process and hand its parts down explicitly (papermail.stages does that
for each stage).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import jinja2
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from papermail import __version__
from papermail.bounces.verp import Verp
from papermail.config import Settings
from papermail.db import make_engine, make_session_factory
from papermail.delivery.base import MailBackend
from papermail.ops.control import sending_paused
from papermail.pipeline.ratelimit import RateLimiter, make_limiter
from papermail.pipeline.rendering import EditionStore, make_environment
from papermail.pipeline.sending import SendPolicy
from papermail.pipeline.variants import Identity, TemplateSource
from papermail.subscribers.bounces import BouncePolicy
from papermail.subscribers.tokens import Links, TokenSigner

if TYPE_CHECKING:
    from papermail.delivery.dkim import DkimSigner


def templates_fingerprint(templates_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((templates_dir / "email").rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(templates_dir).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def make_backend(settings: Settings) -> MailBackend:
    kind = settings.effective_mail_backend
    if kind == "smtp":
        from papermail.delivery.smtp import SmtpBackend

        return SmtpBackend(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            ssl=settings.smtp_ssl,
            timeout=settings.smtp_timeout,
        )
    if kind == "outbox":
        from papermail.delivery.outbox import OutboxBackend

        return OutboxBackend(settings.effective_outbox_dir)
    from papermail.delivery.memory import MemoryBackend

    return MemoryBackend()


def make_dkim_signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer PAPERMAIL_DKIM_* describe, or None (no key: mail goes unsigned)."""
    if settings.dkim_key is None or settings.dkim_selector is None:
        return None
    from papermail.delivery.dkim import DkimSigner  # dkimpy loads only when it signs

    return DkimSigner(
        settings.dkim_key, selector=settings.dkim_selector, domain=settings.effective_dkim_domain
    )


@dataclass
class Wiring:
    """Everything a process needs, made on first use: engines and pools only after a fork."""

    settings: Settings
    redis: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.settings.check_production_ready()
        if self.settings.redis_url:
            self.redis = redis.Redis.from_url(self.settings.redis_url)
        else:
            # Embedded mode: one in-process Redis shared by everything in this process.
            # Imported here: fakeredis costs a production worker ~17 MB it never uses.
            import fakeredis

            self.redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.effective_database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def links(self) -> Links:
        return Links(
            self.settings.base_url, TokenSigner(self.settings.secret_key.get_secret_value())
        )

    @cached_property
    def env(self) -> jinja2.Environment:
        return make_environment(self.settings.templates_dir)

    @cached_property
    def store(self) -> EditionStore:
        # Keyed by the email templates' fingerprint: a deploy that changes a template
        # never sends editions rendered from the old one.
        prefix = f"papermail:edition:{templates_fingerprint(self.settings.templates_dir)}:"
        return EditionStore(
            self.redis, ttl_seconds=self.settings.variant_ttl_seconds, prefix=prefix
        )

    @cached_property
    def identity(self) -> Identity:
        s = self.settings
        return Identity(
            mail_from=s.mail_from,
            envelope_from=s.sender_address,
            domain=s.mail_domain,
            list_name=s.list_name,
            reply_to=s.reply_to,
            verp=self.verp if s.verp_enabled else None,
        )

    @cached_property
    def verp(self) -> Verp:
        """Reads (and, when PAPERMAIL_VERP is on, makes) the bounce addresses."""
        s = self.settings
        return Verp(s.secret_key.get_secret_value(), domain=s.effective_bounce_domain)

    @cached_property
    def bounce_policy(self) -> BouncePolicy:
        s = self.settings
        return BouncePolicy(
            threshold=s.bounce_threshold,
            score_threshold=s.bounce_score_threshold,
            soft_weight=s.bounce_soft_weight,
            decay_days=s.bounce_decay_days,
        )

    @cached_property
    def backend(self) -> MailBackend:
        return make_backend(self.settings)

    @cached_property
    def dkim(self) -> DkimSigner | None:
        """Signs every outgoing message (a callable: bytes -> bytes); None when unset."""
        return make_dkim_signer(self.settings)

    @cached_property
    def limiter(self) -> RateLimiter:
        return make_limiter(
            self.redis,
            rate=self.settings.send_rate_per_second,
            key=f"papermail:ratelimit:{self.settings.smtp_host}",
        )

    @cached_property
    def send_policy(self) -> SendPolicy:
        s = self.settings
        return SendPolicy(
            max_attempts=s.max_attempts,
            retry_base_seconds=s.retry_base_seconds,
            retry_max_seconds=s.retry_max_seconds,
            bounce_threshold=s.bounce_threshold,
            lease_seconds=s.lease_seconds,
            ledger_async_commit=s.ledger_async_commit,
            lease_margin_seconds=s.lease_margin_seconds,
        )

    @cached_property
    def _templates(self) -> TemplateSource:
        return TemplateSource(
            store=self.store, env=self.env, links=self.links, identity=self.identity
        )

    def templates(self) -> TemplateSource:
        """The process's encoded-template cache (bounded), shared by every batch it sends."""
        return self._templates

    def paused(self) -> bool:
        return sending_paused(self.redis)

    def http_client(self) -> httpx.Client:
        return httpx.Client(
            timeout=self.settings.http_timeout,
            headers={"User-Agent": f"papermail/{__version__} (+{self.settings.base_url})"},
            follow_redirects=True,
        )
