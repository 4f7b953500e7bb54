"""The arXiv API (Atom): new submissions in some categories over some days, into PaperIn.

``fetch_new`` asks ``/api/query`` for ``cat:A OR cat:B ...`` sorted by submission date,
newest first, and pages (``start``/``max_results``) until the entries fall before the
first day asked for, a short page, or the end of the results. Like the Hugging Face
source it returns the whole window or raises SourceError; it never returns half of it.

arXiv's terms for automated access: one request at a time, a pause of about 3 s between
requests (``pause_seconds``, with an injectable ``sleep``), and a User-Agent that says who
is asking (``Wiring.http_client`` sets it). A 503 with Retry-After, 429/5xx, the plain
text ``Rate exceeded.`` and network failures are retried with backoff; an Atom feed whose
single entry is titled "Error" is arXiv's way of saying the query is wrong, and is not.

One paper is one row: ids are stored without their version (2506.01234v2 -> 2506.01234),
a paper listed twice (cross-listed, or shifted between pages) is kept once, at its
highest version. A day is a UTC calendar day of the first version's submission
(``published``); no submissions (weekends) is an empty result, not an error.

``load_arxiv_sample`` reads the bundled answer (``papermail/data/sample_arxiv_new.xml``)
through the same page reader, for the demo and ``papermail ingest --source arxiv --sample``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import feedparser
import httpx
from pydantic import ValidationError

from papermail.sources.arxiv_entries import (
    CATEGORY,
    error_entry,
    paper_of,
    published_at,
    raw_id,
    total_results,
)
from papermail.sources.base import (
    FetchResult,
    PaperIn,
    RejectedItem,
    SourceError,
    SourceUnreachable,
    rejection_reason,
)
from papermail.sources.hf import SAMPLE_DAY
from papermail.sources.http import (
    Budget,
    DeadlineExceeded,
    backoff,
    bounded_get,
    excerpt,
    is_absolute_http,
    retry_after,
)

log = logging.getLogger(__name__)

API_PATH = "/api/query"
PAUSE_SECONDS = 3.0  # arXiv asks for no more than one request every three seconds
PAGE_SIZE = 100
MAX_PAGES = 50  # 5,000 entries: several days of the busiest categories
RATE_EXCEEDED = "Rate exceeded."
SAMPLE_RESOURCE = "sample_arxiv_new.xml"
# What a scheduled ingest on SAMPLE_DAY asks for: that day and the three before it.
SAMPLE_DAYS = tuple(SAMPLE_DAY - dt.timedelta(days=n) for n in range(4))


def pause(seconds: float) -> None:
    """The sleep between requests (a module function, so tests can stand in for it)."""
    time.sleep(seconds)


class Throttled(SourceUnreachable):
    """arXiv kept answering "Rate exceeded." (or 503) after every retry: try again later."""


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC: from the first day's midnight to the one after the last day."""

    start: dt.datetime
    end: dt.datetime

    @classmethod
    def of(cls, days: Iterable[dt.date]) -> Window:
        chosen = sorted(set(days))
        if not chosen:
            raise ValueError("days must name at least one day")
        start = dt.datetime.combine(chosen[0], dt.time(), tzinfo=dt.UTC)
        end = dt.datetime.combine(chosen[-1] + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        return cls(start=start, end=end)


def query_url(base_url: str) -> str:
    """The API's query URL under ``base_url``; ValueError unless it is absolute http(s)."""
    url = f"{base_url.rstrip('/')}{API_PATH}"
    if not is_absolute_http(url):
        raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    return url


def search_query(categories: Sequence[str]) -> str:
    """``cat:cs.RO OR cat:cs.CV``: the categories, checked so nothing else enters the query."""
    if not categories:
        raise ValueError("categories must name at least one arXiv category")
    bad = [c for c in categories if not CATEGORY.fullmatch(c)]
    if bad:
        raise ValueError(f"not arXiv category codes: {', '.join(map(repr, bad))}")
    return " OR ".join(f"cat:{c}" for c in dict.fromkeys(categories))


def fetch_new(
    client: httpx.Client,
    *,
    days: Iterable[dt.date],
    categories: Sequence[str],
    base_url: str,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
    retries: int = 4,
    backoff_seconds: float = 5.0,
    pause_seconds: float = PAUSE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    budget: Budget | None = None,
) -> FetchResult:
    """Every paper in ``categories`` first submitted on one of ``days`` (the span between
    the earliest and the latest of them, in UTC), one per arXiv id.

    ``retries`` is the number of extra attempts per request; ``budget`` caps each answer's
    size and the whole fetch's time (defaults: 16 MB, 5 minutes), pauses included. Raises
    SourceError (SourceUnreachable for network failures, Throttled when arXiv kept asking
    us to slow down) if any page cannot be fetched, is too large or late, is not an Atom
    feed, or is arXiv's "Error" entry.
    """
    budget = budget or Budget()
    if page_size < 1 or max_pages < 1 or retries < 0 or pause_seconds < 0:
        raise ValueError("page_size and max_pages must be >= 1, retries and pause >= 0")
    window = Window.of(days)
    url = query_url(base_url)
    query = search_query(categories)
    pacer = Pacer(pause=pause_seconds, sleep=sleep, budget=budget)
    collected = Collected(window)
    seen = pages = 0
    for _ in range(max_pages):
        params: dict[str, str | int] = {
            "search_query": query,
            "sortBy": "submittedDate",
            "sortOrder": "descending",
            "start": seen,
            "max_results": page_size,
        }
        feed = get_feed(
            client,
            url=url,
            params=params,
            retries=retries,
            backoff_seconds=backoff_seconds,
            pacer=pacer,
            budget=budget,
        )
        pages += 1
        entries = feed.entries
        oldest = collected.add(entries, start=seen)
        seen += len(entries)
        total = total_results(feed)
        if (
            len(entries) < page_size
            or (oldest is not None and oldest < window.start)
            or (total is not None and seen >= total)
        ):
            break
    else:
        log.warning(
            "stopped after %d pages for %s..%s; the window may hold more papers",
            max_pages,
            window.start.date(),
            window.end.date(),
        )
    result = collected.result(pages=pages)
    log.info(
        "fetched %d arXiv papers (%d rejected, %d outside the window) in %d pages, %d requests",
        len(result.papers),
        len(result.rejected),
        collected.outside,
        pages,
        pacer.requests,
    )
    return result


def load_arxiv_sample() -> FetchResult:
    """The bundled arXiv answer (new in cs.RO, cs.CR and cs.CV on SAMPLE_DAY, and two
    papers of the Hugging Face sample), read exactly as a live page is: the same Atom
    checks, the same entries into PaperIn, the same window (the four days a scheduled
    ingest covers, ending on SAMPLE_DAY). No network."""
    content = resources.files("papermail.data").joinpath(SAMPLE_RESOURCE).read_bytes()
    feed = read_feed(content, what=SAMPLE_RESOURCE)
    if not is_atom(feed):
        raise SourceError(f"{SAMPLE_RESOURCE} is not an Atom feed")
    collected = Collected(Window.of(SAMPLE_DAYS))
    collected.add(feed.entries, start=0)
    return collected.result(pages=1)


class Collected:
    """The window's papers so far, one per id at its highest version, and the rejections."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.papers: dict[str, tuple[int, PaperIn]] = {}
        self.rejected: list[RejectedItem] = []
        self.outside = 0

    def add(self, entries: Sequence[Any], *, start: int) -> dt.datetime | None:
        """One page's entries (the first is result number ``start``); the oldest
        submission among them, which tells the caller whether to page on."""
        oldest: dt.datetime | None = None
        for offset, entry in enumerate(entries):
            index = start + offset
            try:
                submitted = published_at(entry)
                oldest = submitted if oldest is None else min(oldest, submitted)
                if not self.window.start <= submitted < self.window.end:
                    self.outside += 1
                    continue
                paper, version = paper_of(entry)
            except (ValidationError, ValueError) as exc:
                paper_id = raw_id(entry)
                why = rejection_reason(exc)
                log.warning("skipping entry %d (paper %s): %s", index, paper_id, why)
                self.rejected.append(RejectedItem(index=index, paper_id=paper_id, reason=why))
                continue
            kept = self.papers.get(paper.id)
            if kept is None or version > kept[0]:
                self.papers[paper.id] = (version, paper)
        return oldest

    def result(self, *, pages: int) -> FetchResult:
        papers = [paper for _, paper in self.papers.values()]
        return FetchResult(papers=papers, rejected=list(self.rejected), pages=pages)


def read_feed(content: bytes, *, what: str) -> Any:
    """An answer's body read by feedparser; SourceError when it is arXiv's "Error" entry."""
    feed = feedparser.parse(content)
    error = error_entry(feed)
    if error is not None:
        raise SourceError(f"{what}: arXiv answered with an error: {error!r}")
    return feed


def is_atom(feed: Any) -> bool:
    return str(feed.get("version", "")).startswith("atom")


# HTTP


class _Retryable(Exception):
    """One attempt failed in a way another attempt might not."""

    def __init__(
        self, problem: str, *, network: bool, throttled: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(problem)
        self.network = network
        self.throttled = throttled
        self.retry_after = retry_after


class Pacer:
    """One request at a time, ``pause`` seconds apart, every wait inside the budget.
    ``after_another``: the first request, too, follows one (of another query) and waits."""

    def __init__(
        self,
        *,
        pause: float,
        sleep: Callable[[float], None],
        budget: Budget,
        after_another: bool = False,
    ) -> None:
        self.pause = pause
        self.sleep = sleep
        self.budget = budget
        self.after_another = after_another
        self.requests = 0

    def before_request(self, *, delay: float = 0.0, what: str) -> None:
        wait = max(delay, self.pause) if self.requests or self.after_another else delay
        if wait > 0:
            if wait >= self.budget.remaining:
                raise DeadlineExceeded(
                    f"{what}: the fetch deadline leaves no time for the {wait:.1f} s pause"
                )
            self.sleep(wait)
        self.requests += 1


def get_feed(
    client: httpx.Client,
    *,
    url: str,
    params: dict[str, str | int],
    retries: int,
    backoff_seconds: float,
    pacer: Pacer,
    budget: Budget,
) -> Any:
    """One query's answer as a feed (``params`` must carry ``start``), paced and retried;
    SourceError, SourceUnreachable or Throttled when every attempt failed."""
    shown = str(httpx.URL(url, params=params))
    attempts = retries + 1
    delay = 0.0
    for attempt in range(attempts):
        pacer.before_request(delay=delay, what=f"GET {shown}")
        try:
            return _attempt(client, url=url, params=params, shown=shown, budget=budget)
        except _Retryable as failure:
            if attempt == attempts - 1:
                error = (
                    Throttled
                    if failure.throttled
                    else SourceUnreachable
                    if failure.network
                    else SourceError
                )
                raise error(f"GET {shown} failed after {attempts} attempts: {failure}") from failure
            delay = failure.retry_after or backoff(attempt, backoff_seconds)
            log.warning(
                "GET %s: %s; retry %d/%d in %.1fs", shown, failure, attempt + 1, retries, delay
            )
    raise AssertionError("unreachable: the last attempt returns or raises")


def _attempt(
    client: httpx.Client, *, url: str, params: dict[str, str | int], shown: str, budget: Budget
) -> Any:
    try:
        response = bounded_get(client, url, params=params, budget=budget, shown=shown)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # bad base URL: never retry
        raise SourceError(f"GET {shown}: {exc}") from exc
    except httpx.TransportError as exc:  # DNS, connect, read, timeouts, dropped connections
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise _Retryable(problem, network=True, throttled=False) from exc
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if response.content.strip() == RATE_EXCEEDED.encode():
        # arXiv's throttle answers in plain text, whatever the status.
        raise _Retryable(
            f"{status}: {RATE_EXCEEDED}",
            network=False,
            throttled=True,
            retry_after=retry_after(response),
        )
    if response.status_code == 429 or response.status_code >= 500:
        raise _Retryable(
            f"{status}: {excerpt(response)}",
            network=False,
            throttled=response.status_code in (429, 503),
            retry_after=retry_after(response),
        )
    feed = read_feed(response.content, what=f"GET {shown}")
    if not response.is_success:
        # 400 is a malformed query, other 4xx a wrong URL: more attempts will not fix either.
        raise SourceError(f"GET {shown} answered {status}: {excerpt(response)}")
    if not is_atom(feed):
        kind = response.headers.get("Content-Type", "no content type")
        raise SourceError(
            f"GET {shown} returned a body that is not an Atom feed ({kind}): {excerpt(response)}"
        )
    total = total_results(feed)
    start = int(params["start"])
    if not feed.entries and total is not None and start < total:
        # arXiv now and then answers an empty page in the middle of the results.
        raise _Retryable(
            f"empty page at {start} of {total} results", network=False, throttled=False
        )
    return feed
