"""The one-command demo: the whole pipeline once, embedded, on live or bundled data.

Both sources: Hugging Face Daily Papers (live, or the bundled day when offline) and arXiv's
new submissions (always the bundled answer: a live arXiv fetch asks for 3 s between
requests and is not needed to show what the second source does)."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx

from papermail import ingest_stages, stages
from papermail.config import Settings
from papermail.db import session_scope
from papermail.models import EditionKind
from papermail.pipeline.ingest import IngestReport
from papermail.sources.arxiv import load_arxiv_sample
from papermail.sources.base import FetchResult, SourceError, SourceUnreachable
from papermail.sources.hf import SAMPLE_DAY, fetch_daily, load_sample
from papermail.subscribers.preferences import Preferences
from papermail.subscribers.subscriptions import add_subscriber
from papermail.wiring import Wiring

# People with different tastes, so the outbox shows what preferences do.
DEMO_SUBSCRIBERS: tuple[tuple[str, dict[str, object]], ...] = (
    ("ada@example.org", {"topics": ["diffusion", "video"], "max_papers": 10}),
    ("grace@example.org", {"format": "text", "max_papers": 5}),
    (
        "alan@example.org",
        {
            "topics": ["reinforcement learning", "robotics"],
            "max_papers": 3,
            "timezone": "America/New_York",
            "send_hour": 8,
        },
    ),
    (
        "katherine@example.org",
        {
            "topics": ["scaling law", "law"],
            "max_papers": 8,
            "follow_organizations": ["Google"],
            "timezone": "Europe/Paris",
        },
    ),
    # Follows arXiv categories: papers only arXiv has announced reach her, and nobody else.
    (
        "margaret@example.org",
        {"topics": ["robot manipulation"], "arxiv_categories": ["cs.RO", "cs.CR"]},
    ),
)
ARXIV_SOURCE = "bundled arXiv sample"


def demo_settings(base: Settings) -> Settings:
    """Embedded whatever the environment says: its own SQLite, fakeredis, outbox."""
    var = base.var_dir / "demo"
    return base.model_copy(
        update={
            "environment": "development",
            "redis_url": None,
            "database_url": None,
            "var_dir": var,
            "mail_backend": "outbox",
            "outbox_dir": var / "outbox",
            "send_rate_per_second": 0.0,
        }
    )


def reset(settings: Settings) -> None:
    shutil.rmtree(settings.var_dir, ignore_errors=True)
    settings.var_dir.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True, slots=True)
class Papers:
    result: FetchResult
    edition_day: dt.date
    live: bool
    note: str


def fetch_or_sample(
    *,
    base_url: str,
    today: dt.date,
    timeout: float = 5.0,
    transport: httpx.BaseTransport | None = None,
) -> Papers:
    """Yesterday's and the day before's papers live; the bundled sample when offline."""
    days = [today - dt.timedelta(days=1), today - dt.timedelta(days=2)]
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            results = [fetch_daily(client, day=d, base_url=base_url, retries=0) for d in days]
    except SourceError as exc:
        sample = load_sample()
        reason = "cannot reach the API" if isinstance(exc, SourceUnreachable) else str(exc)[:100]
        return Papers(
            sample,
            SAMPLE_DAY + dt.timedelta(days=1),
            live=False,
            note=f"No network ({reason} at {base_url}): using the bundled sample of {SAMPLE_DAY} "
            f"({len(sample.papers)} papers).",
        )
    merged = FetchResult(
        papers=[p for r in results for p in r.papers],
        rejected=[x for r in results for x in r.rejected],
        pages=sum(r.pages for r in results),
    )
    if not merged.papers:
        sample = load_sample()
        return Papers(
            sample,
            SAMPLE_DAY + dt.timedelta(days=1),
            live=False,
            note=f"The API returned no papers for {days[-1]}..{days[0]}: using the "
            f"bundled sample of {SAMPLE_DAY}.",
        )
    return Papers(
        merged, today, live=True, note=f"Fetched {len(merged.papers)} papers live from {base_url}."
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    hf: IngestReport
    arxiv: IngestReport
    edition_id: int | None  # None: no papers in the edition's window

    @property
    def arxiv_note(self) -> str:
        return (
            f"{self.arxiv.fetched} papers from the {ARXIV_SOURCE} of {SAMPLE_DAY} "
            f"({self.arxiv.inserted} new, {self.arxiv.updated} merged with their Hugging Face "
            f"rows, {len(self.arxiv.rejected)} rejected)"
        )


def arxiv_followers() -> list[tuple[str, list[str]]]:
    """The demo readers who follow arXiv categories: only they get arXiv-only papers."""
    chosen = [(e, Preferences.model_validate(p).arxiv_categories) for e, p in DEMO_SUBSCRIBERS]
    return [(email, categories) for email, categories in chosen if categories]


def prepare(w: Wiring, *, papers: Papers, now: dt.datetime) -> Prepared:
    """Store both sources' papers (journaled as ingests), add the demo's readers and build
    the edition. Live, the arXiv sample's day is outside the edition: stored, not sent."""
    source = "Hugging Face API" if papers.live else "bundled sample"
    hf = ingest_stages.store_papers(w, result=papers.result, source=source)
    arxiv = ingest_stages.store_papers(w, result=load_arxiv_sample(), source=ARXIV_SOURCE)
    with session_scope(w.sessions) as session:
        for email, prefs in DEMO_SUBSCRIBERS:
            prefs_in = Preferences.model_validate(prefs)
            add_subscriber(session, email=email, prefs=prefs_in, now=now, confirmed=True)
    summary = stages.build_edition(w, day=papers.edition_day, kind=EditionKind.DAILY, rank_hour=6)
    return Prepared(hf=hf, arxiv=arxiv, edition_id=summary.edition_id)


def outbox_index(settings: Settings) -> Path:
    return (settings.effective_outbox_dir / "index.html").resolve()
