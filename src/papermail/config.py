"""Settings: the only place papermail reads the environment.

Every value comes from a ``PAPERMAIL_*`` variable or ``.env``. With neither
``PAPERMAIL_REDIS_URL`` nor ``PAPERMAIL_DATABASE_URL`` set, papermail runs
embedded: SQLite under ``var/``, in-process fakeredis, Celery eager and the
outbox backend, so one process can demo the whole pipeline.
"""

from __future__ import annotations

import math
import re
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from papermail.secret_policy import DEFAULT_SECRET, MAKE_SECRET, secret_weakness
from papermail.sources.arxiv_taxonomy import parse_categories

if TYPE_CHECKING:
    from papermail.delivery.dkim_keys import PrivateKey

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_templates_dir() -> Path:
    """The templates shipped in the wheel (papermail/templates), or the checkout's own."""
    installed = Path(__file__).resolve().parent / "templates"
    return installed if (installed / "email").is_dir() else PROJECT_ROOT / "templates"


_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


class InsecureConfiguration(RuntimeError):
    """Raised when production mode would start with a development default."""


def _no_crlf(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF (it ends up in a mail header)")
    if "=?" in value:
        # The email package decodes encoded-word lookalikes, CR/LF included, when it folds.
        raise ValueError("must not contain '=?' (it ends up in a mail header)")
    return value


# A batch stops sending this long before its lease ends (see pipeline/sending.py), so no
# message is still in flight when the rows are reclaimed: four SMTP timeouts (connect,
# MAIL, RCPT, end of DATA), never less than this floor.
LEASE_MARGIN_FLOOR_SECONDS = 5.0


def lease_margin_for(smtp_timeout: float) -> float:
    """How long before its lease ends a batch stops sending: ``max(5, 4 × smtp_timeout)``."""
    return max(LEASE_MARGIN_FLOOR_SECONDS, 4 * smtp_timeout)


def min_lease_seconds(smtp_timeout: float) -> int:
    """The shortest lease that leaves a batch at least its margin (half its lease) to send."""
    return math.ceil(2 * lease_margin_for(smtp_timeout))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAPERMAIL_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    base_url: str = "http://127.0.0.1:8000"

    database_url: str | None = None
    redis_url: str | None = None
    var_dir: Path = Path("var")
    templates_dir: Path = Field(default_factory=default_templates_dir)

    # Mail
    mail_backend: Literal["smtp", "outbox", "memory"] | None = None
    outbox_dir: Path | None = None
    mail_from: str = "papermail <digest@papermail.localhost>"
    reply_to: str | None = None
    list_name: str = "papermail daily papers"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_timeout: float = 30.0
    # DKIM (delivery/dkim.py, docs/operations.md): off until a key is set
    dkim_selector: str | None = Field(default=None, description="SELECTOR._domainkey.DOMAIN")
    dkim_domain: str | None = Field(default=None, description="d=; default the mail domain")
    dkim_private_key_path: Path | None = None
    dkim_private_key: SecretStr | None = Field(default=None, description="the PEM, not a path")
    dkim_algorithm: Literal["rsa", "ed25519"] | None = Field(
        default=None, description="checked against the key's; default the key's"
    )
    _dkim_key: PrivateKey | None = PrivateAttr(default=None)  # loaded by _dkim_key_usable

    # Sources
    hf_api_base: str = "https://huggingface.co"
    arxiv_api_base: str = "http://export.arxiv.org"
    arxiv_categories: str = Field(
        default="cs.LG,cs.CV,cs.CL,cs.RO,cs.AI",
        description="arXiv categories fetched daily, comma-separated (sources/arxiv_taxonomy.py)",
    )
    arxiv_pause_seconds: float = Field(
        default=3.0, ge=0, description="between two arXiv API requests (arXiv asks for 3 s)"
    )
    arxiv_page_size: int = Field(
        default=100, ge=1, le=2000, description="entries per arXiv API request (at most 2,000)"
    )
    http_timeout: float = 20.0
    http_retries: int = 4
    http_max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="largest upstream answer read"
    )
    fetch_deadline_seconds: float = Field(
        default=300.0, gt=0, description="a whole fetch (all pages and retries) stops after this"
    )
    ingest_days_back: int = Field(default=2, ge=1, le=14)

    # Schedule (UTC)
    ingest_interval_minutes: int = Field(default=30, ge=1)
    edition_hour_utc: int = Field(default=6, ge=0, le=23)
    edition_minute_utc: int = Field(default=0, ge=0, le=59)
    weekly_edition_weekday: int = Field(default=0, ge=0, le=6, description="0 = Monday")
    plan_minute: int = Field(default=5, ge=0, le=59)

    # Editions and delivery
    # The most papers one edition's pool holds (in trending order): every reader's
    # picks come from it, and each is rendered once per edition.
    edition_size: int = Field(default=1000, ge=1, le=10_000)
    default_max_papers: int = Field(default=10, ge=1, le=30)
    batch_size: int = Field(default=100, ge=1, le=5000)
    send_rate_per_second: float = Field(default=0.0, ge=0.0, description="0 = unlimited")
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=60.0, gt=0)
    retry_max_seconds: float = Field(default=6 * 3600.0, gt=0, description="backoff cap")
    bounce_threshold: int = Field(default=3, ge=1)
    lease_seconds: int = Field(default=300, ge=10)
    ledger_async_commit: bool = Field(
        default=False,
        description="PostgreSQL synchronous_commit=off for 'sent' marks (see README)",
    )
    redispatch_interval_seconds: int = Field(default=60, ge=1)
    redispatch_stale_seconds: int = Field(
        default=900, ge=1, description="a queued batch not started after this is queued again"
    )
    variant_ttl_seconds: int = Field(default=3 * 24 * 3600, ge=60)

    # Bounces and complaints (papermail/bounces/, docs/operations.md)
    bounce_domain: str | None = Field(
        default=None, description="VERP addresses bounces+<token>@ this; default the mail domain"
    )
    verp: bool | None = Field(
        default=None, description="per-delivery envelope senders; default on when bounce_domain is"
    )
    bounce_score_threshold: float = Field(default=5.0, gt=0, description="soft score suppressing")
    bounce_soft_weight: float = Field(default=1.0, ge=0, description="one soft bounce's score")
    bounce_decay_days: float = Field(default=7.0, gt=0, description="a soft bounce's half-life")
    bounce_max_bytes: int = Field(
        default=1024 * 1024, ge=4096, description="the largest bounce message read"
    )
    bounce_listen_host: str = "127.0.0.1"  # `papermail bounces serve`
    bounce_listen_port: int = Field(default=2525, ge=1, le=65535)
    bounce_mailbox_protocol: Literal["imap", "pop3"] = "imap"  # `papermail bounces poll`
    bounce_mailbox_host: str | None = None
    bounce_mailbox_port: int | None = Field(default=None, ge=1, le=65535)
    bounce_mailbox_user: str | None = None
    bounce_mailbox_password: SecretStr | None = None
    bounce_mailbox_folder: str = "INBOX"
    bounce_mailbox_delete: bool = Field(
        default=True, description="delete processed messages; false: IMAP flags them \\Seen"
    )
    bounce_poll_minutes: int = Field(default=5, ge=1)
    ses_topic_arns: str | None = Field(
        default=None, description="SNS topics whose notifications /webhooks/ses accepts"
    )
    postmark_webhook_username: str | None = None
    postmark_webhook_password: SecretStr | None = None

    # Operations
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="proxies whose X-Forwarded-For is trusted (client IPs for rate limits)",
    )
    ops_username: str = "ops"
    ops_password: SecretStr | None = None
    log_json: bool = False
    log_level: str = "INFO"

    @field_validator("mail_from", "list_name", "reply_to")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        return None if value is None else _no_crlf(value)

    @field_validator("templates_dir")
    @classmethod
    def _has_templates(cls, value: Path) -> Path:
        missing = [p for p in ("email/digest", "email/confirm", "web") if not (value / p).is_dir()]
        if missing:
            raise ValueError(f"{value} has no {', '.join(missing)} templates")
        return value

    @field_validator("bounce_domain")
    @classmethod
    def _is_domain(cls, value: str | None) -> str | None:
        # It ends up in every MAIL FROM: a hostname and nothing else.
        if value is not None and not _DOMAIN.fullmatch(value):
            raise ValueError(f"must be a domain name like bounces.example.org, got {value!r}")
        return None if value is None else value.lower()

    @field_validator("arxiv_categories")
    @classmethod
    def _known_categories(cls, value: str) -> str:
        return ",".join(parse_categories(value))

    @field_validator("base_url", "hf_api_base", "arxiv_api_base")
    @classmethod
    def _absolute_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _redis_and_database_together(self) -> Settings:
        # Half-embedded is the worst of both: a database shared by processes whose
        # queues, pause switch and rate limit each live in their own in-process Redis.
        if (self.redis_url is None) != (self.database_url is None):
            missing = "PAPERMAIL_REDIS_URL" if self.redis_url is None else "PAPERMAIL_DATABASE_URL"
            raise ValueError(
                f"{missing} is not set: set both PAPERMAIL_REDIS_URL and "
                "PAPERMAIL_DATABASE_URL, or neither (embedded mode)"
            )
        return self

    @model_validator(mode="after")
    def _sender_has_domain(self) -> Settings:
        if "@" not in parseaddr(self.mail_from)[1]:
            raise ValueError(
                f"PAPERMAIL_MAIL_FROM has no address with a domain: {self.mail_from!r}"
            )
        return self

    @model_validator(mode="after")
    def _dkim_key_usable(self) -> Settings:
        # The key is read and parsed here, once: a bad one stops every process at start.
        key_path, inline = self.dkim_private_key_path, self.dkim_private_key
        if key_path is None and inline is None:
            stray = [n for n in ("selector", "domain", "algorithm") if getattr(self, f"dkim_{n}")]
            if stray:
                raise ValueError(
                    f"PAPERMAIL_DKIM_{stray[0].upper()} is set but there is no DKIM key: set "
                    "PAPERMAIL_DKIM_PRIVATE_KEY_PATH (make one with `papermail dkim keygen`)"
                )
            return self
        from papermail.delivery.dkim_keys import configured_key

        self._dkim_key = configured_key(
            key_path=key_path,
            inline=None if inline is None else inline.get_secret_value(),
            selector=self.dkim_selector,
            domain=self.effective_dkim_domain,
            domain_setting=(
                "PAPERMAIL_DKIM_DOMAIN" if self.dkim_domain else "the PAPERMAIL_MAIL_FROM domain"
            ),
            algorithm=self.dkim_algorithm,
        )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_its_margin(self) -> Settings:
        # The batch stops min(margin, lease / 2) before its lease ends; a lease under twice
        # the margin would either cut the margin (a slow message still in flight when the
        # rows are reclaimed) or leave the batch almost no time to send.
        margin = self.lease_margin_seconds
        minimum = min_lease_seconds(self.smtp_timeout)
        if self.lease_seconds < minimum:
            raise ValueError(
                f"PAPERMAIL_LEASE_SECONDS={self.lease_seconds} is too short for "
                f"PAPERMAIL_SMTP_TIMEOUT={self.smtp_timeout:g}: a batch stops sending "
                f"max({LEASE_MARGIN_FLOOR_SECONDS:g}, 4 x SMTP timeout) = {margin:g} s before "
                f"its lease ends and needs at least as long again to send, so the lease must "
                f"be at least 2 x {margin:g} = {minimum} s; set PAPERMAIL_LEASE_SECONDS to "
                f"{minimum} or more, or lower PAPERMAIL_SMTP_TIMEOUT"
            )
        return self

    @property
    def lease_margin_seconds(self) -> float:
        """How long before its lease ends a batch stops sending (see lease_margin_for)."""
        return lease_margin_for(self.smtp_timeout)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def arxiv_category_list(self) -> list[str]:
        return self.arxiv_categories.split(",")

    @property
    def embedded(self) -> bool:
        return self.redis_url is None and self.database_url is None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'papermail.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def effective_mail_backend(self) -> str:
        return self.mail_backend or ("outbox" if self.embedded else "smtp")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def effective_outbox_dir(self) -> Path:
        return self.outbox_dir or self.var_dir / "outbox"

    @property
    def sender_address(self) -> str:
        return parseaddr(self.mail_from)[1]

    @property
    def mail_domain(self) -> str:
        """Domain for Message-IDs and List-Id: the sender's own."""
        return self.sender_address.rsplit("@", 1)[1].lower()

    @property
    def effective_dkim_domain(self) -> str:
        """The signing domain (d=): PAPERMAIL_DKIM_DOMAIN, or the mail domain."""
        return (self.dkim_domain or self.mail_domain).lower()

    @property
    def dkim_key(self) -> PrivateKey | None:
        """The DKIM private key, read and checked at start; None: messages go unsigned."""
        return self._dkim_key

    @property
    def effective_bounce_domain(self) -> str:
        """Where bounces come back (VERP addresses, `papermail bounces serve`)."""
        return (self.bounce_domain or self.mail_domain).strip().lower()

    @property
    def verp_enabled(self) -> bool:
        return self.verp if self.verp is not None else self.bounce_domain is not None

    @property
    def ses_topics(self) -> frozenset[str]:
        return frozenset(t.strip() for t in (self.ses_topic_arns or "").split(",") if t.strip())

    @property
    def bounce_mailbox_configured(self) -> bool:
        return bool(self.bounce_mailbox_host and self.bounce_mailbox_user)

    def check_production_ready(self) -> None:
        """Refuse to run production with development defaults."""
        if self.environment != "production":
            return
        problems = []
        weakness = secret_weakness(self.secret_key.get_secret_value())
        if weakness:
            problems.append(f"PAPERMAIL_SECRET_KEY {weakness}; {MAKE_SECRET}")
        if self.embedded:
            problems.append("PAPERMAIL_REDIS_URL and PAPERMAIL_DATABASE_URL must be set")
        elif not (self.database_url or "").startswith("postgresql"):
            problems.append("PAPERMAIL_DATABASE_URL must be PostgreSQL (postgresql+psycopg://...)")
        if self.smtp_user and not (self.smtp_starttls or self.smtp_ssl):
            problems.append("SMTP AUTH needs PAPERMAIL_SMTP_STARTTLS or PAPERMAIL_SMTP_SSL")
        if not self.base_url.startswith("https://"):
            problems.append("PAPERMAIL_BASE_URL must be https:// (List-Unsubscribe needs it)")
        if problems:
            raise InsecureConfiguration("refusing to start in production: " + "; ".join(problems))


def describe_errors(error: ValidationError) -> str:
    """A settings error as operators set it: one line per environment variable."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]).upper() if item["loc"] else ""
        name = f"PAPERMAIL_{field}" if field else "configuration"
        lines.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
