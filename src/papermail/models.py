"""The relational model. Everything that must survive a restart lives here."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from papermail.clock import utcnow


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings with a CHECK constraint: portable and readable in psql.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        values_callable=lambda e: [m.value for m in e],
        length=16,
        validate_strings=True,
    )


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


class Frequency(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


class MailFormat(enum.StrEnum):
    HTML = "html"
    TEXT = "text"


class EditionKind(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


class FeedbackDirection(enum.StrEnum):
    MORE = "more"
    LESS = "less"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"


class BounceKind(enum.StrEnum):
    HARD = "hard"  # a permanent failure (5.x.x)
    SOFT = "soft"  # a temporary one (4.x.x): scored, decaying (subscribers/bounces.py)
    COMPLAINT = "complaint"  # the reader marked a digest as spam (ARF, SES, Postmark)


class BounceSource(enum.StrEnum):
    """How a bounce event reached us (papermail/bounces/)."""

    SMTP = "smtp"  # `papermail bounces serve`
    IMAP = "imap"  # `papermail bounces poll`
    POP3 = "pop3"
    SES = "ses"  # POST /webhooks/ses
    POSTMARK = "postmark"  # POST /webhooks/postmark
    SESSION = "session"  # a 5xx while sending (pipeline/sending.py)


class Paper(Base):
    __tablename__ = "papers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # arXiv id
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[str]] = mapped_column(default=list)
    published_at: Mapped[dt.datetime | None]
    submitted_on_daily_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    upvotes: Mapped[int] = mapped_column(default=0)
    num_comments: Mapped[int] = mapped_column(default=0)
    github_repo: Mapped[str | None] = mapped_column(String(512))
    github_stars: Mapped[int | None]
    project_page: Mapped[str | None] = mapped_column(String(512))
    organization: Mapped[str | None] = mapped_column(String(256))
    ai_summary: Mapped[str | None] = mapped_column(Text)
    ai_keywords: Mapped[list[str]] = mapped_column(default=list)
    thumbnail: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(16), default="hf")  # where it came from first
    # arXiv's own metadata (sources/arxiv.py): categories with the primary one first.
    categories: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    arxiv_comment: Mapped[str | None] = mapped_column(Text)
    journal_ref: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PaperSnapshot(Base):
    """One observation of a paper's votes; the history behind upvote velocity."""

    __tablename__ = "paper_snapshots"
    __table_args__ = (Index("ix_paper_snapshots_paper_observed", "paper_id", "observed_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id", ondelete="CASCADE"))
    observed_at: Mapped[dt.datetime]
    upvotes: Mapped[int]
    num_comments: Mapped[int] = mapped_column(default=0)


class Edition(Base):
    __tablename__ = "editions"
    __table_args__ = (UniqueConstraint("day", "kind", name="uq_editions_day_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date]
    kind: Mapped[EditionKind] = mapped_column(_enum(EditionKind, "edition_kind"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    items: Mapped[list[EditionItem]] = relationship(
        back_populates="edition", order_by="EditionItem.rank", cascade="all, delete-orphan"
    )


class EditionItem(Base):
    __tablename__ = "edition_items"

    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), primary_key=True)
    rank: Mapped[int]
    score: Mapped[float] = mapped_column(Float)

    edition: Mapped[Edition] = relationship(back_populates="items")
    paper: Mapped[Paper] = relationship(lazy="joined")


class Subscriber(Base):
    __tablename__ = "subscribers"
    # SQLite would otherwise reuse an erased subscriber's id, and their old unsubscribe
    # links (which never expire) would then act on whoever got it next.
    __table_args__ = (
        Index("ix_subscribers_status_id", "status", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised
    status: Mapped[SubscriberStatus] = mapped_column(
        _enum(SubscriberStatus, "subscriber_status"), default=SubscriberStatus.PENDING
    )
    frequency: Mapped[Frequency] = mapped_column(
        _enum(Frequency, "frequency"), default=Frequency.DAILY
    )
    max_papers: Mapped[int] = mapped_column(default=10)
    topics: Mapped[list[str]] = mapped_column(default=list)
    follow_organizations: Mapped[list[str]] = mapped_column(default=list)
    follow_authors: Mapped[list[str]] = mapped_column(default=list)
    format: Mapped[MailFormat] = mapped_column(
        _enum(MailFormat, "mail_format"), default=MailFormat.HTML
    )
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    send_hour: Mapped[int] = mapped_column(default=7)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[dt.datetime | None]
    unsubscribed_at: Mapped[dt.datetime | None]
    unsubscribe_reason: Mapped[str | None] = mapped_column(String(500))
    bounce_count: Mapped[int] = mapped_column(default=0)
    token_version: Mapped[int] = mapped_column(default=1)
    # Names muted from a digest card (subscribers/feedback.py): a paper by any of them is
    # never selected. Stored as shown on the card; compared case-insensitively.
    muted_authors: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    muted_organizations: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    # "Trending vs. for me" (pipeline/relevance.py): 0 is the trending list everyone gets,
    # 1 only what is picked for this reader; the form offers five steps in between.
    relevance_weight: Mapped[float] = mapped_column(Float, default=0.5, server_default="0.5")
    # arXiv category codes the reader follows (sources/arxiv_taxonomy.py), in its order.
    arxiv_categories: Mapped[list[str]] = mapped_column(default=list, server_default="[]")


class Feedback(Base):
    """A reader's "more like this" / "less like this" on one paper; one per paper, the
    latest word wins (subscribers/feedback.py)."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "paper_id", name="uq_feedback_subscriber_paper"),
        # The preferences page lists a reader's marks newest first.
        Index("ix_feedback_subscriber_created", "subscriber_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id", ondelete="CASCADE"))
    direction: Mapped[FeedbackDirection] = mapped_column(
        _enum(FeedbackDirection, "feedback_direction")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One operator action on a subscriber (the subscriber desk, subscribers/desk.py):
    who, when, what, and the reason they gave. Outlives the subscriber it names."""

    __tablename__ = "audit_log"
    # A subscriber's history reads their entries in time order.
    __table_args__ = (Index("ix_audit_log_subscriber_at", "subscriber_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # the /ops operator, or cli:$USER
    action: Mapped[str] = mapped_column(String(32))  # suppress | unsuppress | import | ...
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str | None] = mapped_column(Text)


class Variant(Base):
    """What a group of subscribers receive: (edition, selected papers + reasons, format).

    Durable, so a send batch can re-render it after Redis lost the compiled copy.
    """

    __tablename__ = "variants"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), index=True
    )
    format: Mapped[MailFormat] = mapped_column(_enum(MailFormat, "mail_format"))
    # [[paper_id, reason], ...] in the order they appear in the email.
    selection: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# The ledger's partial indexes' predicates, the same on PostgreSQL and SQLite.
_UNSENT = text("status <> 'sent'")
_SENT = text("sent_at IS NOT NULL")


class Delivery(Base):
    """The ledger: one row per subscriber per edition, the truth about what was sent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "edition_id", name="uq_deliveries_subscriber_edition"),
        Index("ix_deliveries_edition_status", "edition_id", "status"),
        # What is still to send (or never will be): retries due, expired leases, the
        # backlog, failures. Sent rows, nearly all of them, stay out: it holds what is in
        # flight and the failed and skipped rows, not every message ever sent, and a
        # "sent" mark writes no entry in it.
        Index(
            "ix_deliveries_status_next",
            "status",
            "next_attempt_at",
            postgresql_where=_UNSENT,
            sqlite_where=_UNSENT,
        ),
        # Send rates and the sent-per-hour chart read recent sends: keep that cheap at
        # millions of rows. Only sent rows have a time: planning and claims write no entry.
        Index(
            "ix_deliveries_sent_at",
            "sent_at",
            postgresql_where=_SENT,
            sqlite_where=_SENT,
        ),
        {"sqlite_autoincrement": True},  # delivery ids are in Message-IDs: never reuse one
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    variant_key: Mapped[str] = mapped_column(ForeignKey("variants.key"))
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[dt.datetime | None]
    next_attempt_at: Mapped[dt.datetime | None]
    dispatched_at: Mapped[dt.datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]


class BounceEvent(Base):
    """One bounce or complaint, stored once (``dedup_key``) however often it arrives:
    the history behind soft-bounce scores and the /ops bounce and complaint rates."""

    __tablename__ = "bounce_events"
    __table_args__ = (
        # A subscriber's soft-bounce score reads their recent events.
        Index("ix_bounce_events_subscriber_received", "subscriber_id", "received_at"),
        # The rates per day read a window of events.
        Index("ix_bounce_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[BounceKind] = mapped_column(_enum(BounceKind, "bounce_kind"))
    source: Mapped[BounceSource] = mapped_column(_enum(BounceSource, "bounce_source"))
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("deliveries.id", ondelete="SET NULL"),
    )
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    recipient: Mapped[str] = mapped_column(String(320))
    status: Mapped[str | None] = mapped_column(String(16))  # "5.1.1"; None when not given
    diagnostic: Mapped[str | None] = mapped_column(String(500))  # trimmed
    # sha256 of (message, recipient, kind): a replayed webhook or a re-read mailbox adds nothing.
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)


class JobRun(Base):
    """One run of a pipeline stage, for operators: when, how long, what it did."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_stage_started", "stage", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(32))  # ingest | edition | planning | ...
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    ok: Mapped[bool | None]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
