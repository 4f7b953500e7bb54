"""The Hugging Face Daily Papers API: fetch a day, page by page, into PaperIn.

``fetch_daily`` either returns the whole day or raises SourceError; it never
returns half a day, so callers ingest only after the fetch succeeded and a
broken page can never leave a partial write behind.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable
from importlib import resources

import httpx
from pydantic import ValidationError

from papermail.sources.base import (
    FetchResult,
    PaperIn,
    RejectedItem,
    SourceError,
    SourceUnreachable,
    clean_line,
    rejection_reason,
)
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

SAMPLE_DAY = dt.date(2026, 11, 26)
SAMPLE_RESOURCE = "sample_daily_papers.json"


def parse_page(raw: object) -> FetchResult:
    """Validate one decoded page; bad items are rejected one by one, good ones kept."""
    if not isinstance(raw, list):
        raise SourceError(f"expected a JSON array of papers, got a JSON {_json_kind(raw)}")
    papers, rejected = _parse_items(raw, start=0)
    return FetchResult(papers=_unique(papers), rejected=rejected, pages=1)


def fetch_daily(
    client: httpx.Client,
    *,
    day: dt.date,
    base_url: str,
    page_size: int = 50,
    max_pages: int = 20,
    retries: int = 4,
    backoff_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    budget: Budget | None = None,
) -> FetchResult:
    """Every paper submitted on ``day``, de-duplicated by id (first occurrence wins).

    Pages until an empty page, a short page, or ``max_pages``. ``retries`` is the
    number of extra attempts per request. ``budget`` caps each response's size and the
    whole fetch's time (defaults: 16 MB, 5 minutes). Raises SourceError
    (SourceUnreachable for network failures) if any page cannot be fetched, is too
    large or late, or is not a JSON array.
    """
    budget = budget or Budget()
    if page_size < 1 or max_pages < 1 or retries < 0:
        raise ValueError("page_size and max_pages must be >= 1 and retries >= 0")
    url = f"{base_url.rstrip('/')}/api/daily_papers"
    if not is_absolute_http(url):
        raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    papers: list[PaperIn] = []
    rejected: list[RejectedItem] = []
    seen_items = pages = 0
    for page in range(max_pages):
        params: dict[str, str | int] = {"date": day.isoformat(), "p": page, "limit": page_size}
        response = _get(
            client,
            url=url,
            params=params,
            retries=retries,
            backoff_seconds=backoff_seconds,
            sleep=sleep,
            budget=budget,
        )
        items = _decode(response)
        pages += 1
        if not items:
            break
        page_papers, page_rejected = _parse_items(items, start=seen_items)
        papers.extend(page_papers)
        rejected.extend(page_rejected)
        seen_items += len(items)
        if len(items) < page_size:
            break
    else:
        log.warning("stopped after %d pages for %s; the day may have more papers", max_pages, day)
    unique = _unique(papers)
    log.info(
        "fetched %d papers (%d rejected) for %s in %d pages", len(unique), len(rejected), day, pages
    )
    return FetchResult(papers=unique, rejected=rejected, pages=pages)


def load_sample() -> FetchResult:
    """The bundled offline day (SAMPLE_DAY), validated exactly like a live page."""
    text = resources.files("papermail.data").joinpath(SAMPLE_RESOURCE).read_text(encoding="utf-8")
    return parse_page(json.loads(text))


# HTTP


class _Retryable(Exception):
    """One attempt failed in a way another attempt might not."""

    def __init__(self, problem: str, *, network: bool, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.network = network
        self.retry_after = retry_after


def _get(
    client: httpx.Client,
    *,
    url: str,
    params: dict[str, str | int],
    retries: int,
    backoff_seconds: float,
    sleep: Callable[[float], None],
    budget: Budget,
) -> httpx.Response:
    shown = str(httpx.URL(url, params=params))
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            return _attempt(client, url=url, params=params, shown=shown, budget=budget)
        except _Retryable as failure:
            if attempt == attempts - 1:
                error = SourceUnreachable if failure.network else SourceError
                raise error(f"GET {shown} failed after {attempts} attempts: {failure}") from failure
            delay = failure.retry_after or backoff(attempt, backoff_seconds)
            if delay >= budget.remaining:
                raise DeadlineExceeded(
                    f"GET {shown} failed ({failure}) and the fetch deadline leaves no time "
                    "for another attempt"
                ) from failure
            log.warning(
                "GET %s: %s; retry %d/%d in %.1fs", shown, failure, attempt + 1, retries, delay
            )
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _attempt(
    client: httpx.Client, *, url: str, params: dict[str, str | int], shown: str, budget: Budget
) -> httpx.Response:
    try:
        response = bounded_get(client, url, params=params, budget=budget, shown=shown)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # bad base URL: never retry
        raise SourceError(f"GET {shown}: {exc}") from exc
    except httpx.TransportError as exc:  # DNS, connect, read, timeouts, dropped connections
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise _Retryable(problem, network=True) from exc
    if response.is_success:
        return response
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if _retryable(response.status_code):
        raise _Retryable(
            f"{status}: {excerpt(response)}", network=False, retry_after=retry_after(response)
        )
    # 400 means an invalid date, other 4xx a wrong URL: more attempts will not fix either.
    raise SourceError(f"GET {shown} answered {status}: {excerpt(response)}")


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _decode(response: httpx.Response) -> list[object]:
    shown = str(response.request.url)
    try:
        raw = response.json()
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        kind = response.headers.get("Content-Type", "no content type")
        raise SourceError(
            f"GET {shown} returned a body that is not JSON ({kind}): {excerpt(response)}"
        ) from exc
    if not isinstance(raw, list):
        raise SourceError(
            f"GET {shown} returned a JSON {_json_kind(raw)} instead of an array "
            f"of papers: {excerpt(response)}"
        )
    return raw


def _json_kind(value: object) -> str:
    names = {dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# Items


def _parse_items(items: list[object], *, start: int) -> tuple[list[PaperIn], list[RejectedItem]]:
    papers: list[PaperIn] = []
    rejected: list[RejectedItem] = []
    for offset, item in enumerate(items):
        index = start + offset
        try:
            papers.append(PaperIn.model_validate(_fields(item)))
        except (ValidationError, ValueError) as exc:
            paper_id = _raw_id(item)
            reason = rejection_reason(exc)
            log.warning("skipping item %d (paper %s): %s", index, paper_id, reason)
            rejected.append(RejectedItem(index=index, paper_id=paper_id, reason=reason))
    return papers, rejected


def _fields(item: object) -> dict[str, object]:
    """Flatten one API item (an outer object wrapping ``paper``) into PaperIn's fields."""
    if not isinstance(item, dict):
        raise ValueError(f"item is a JSON {_json_kind(item)}, not an object")
    paper = item.get("paper")
    if not isinstance(paper, dict):
        raise ValueError("item has no 'paper' object")
    return {
        "id": paper.get("id"),
        "title": _first(paper.get("title"), item.get("title")),
        "summary": _first(paper.get("summary"), item.get("summary")),
        "authors": _author_names(paper.get("authors")),
        "published_at": _first(paper.get("publishedAt"), item.get("publishedAt")),
        "submitted_on_daily_at": _first(
            paper.get("submittedOnDailyAt"), item.get("submittedOnDailyAt")
        ),
        "upvotes": paper.get("upvotes"),  # only the paper carries votes
        "num_comments": item.get("numComments"),  # only the outer item carries comments
        "github_repo": paper.get("githubRepo"),
        "github_stars": paper.get("githubStars"),
        "project_page": paper.get("projectPage"),
        "organization": _organization(paper.get("organization"), item.get("organization")),
        "ai_summary": paper.get("ai_summary"),
        "ai_keywords": paper.get("ai_keywords"),
        "thumbnail": item.get("thumbnail"),
        "source": "hf",
    }


def _first(*values: object) -> object:
    return next((v for v in values if v is not None), None)


def _author_names(raw: object) -> object:
    # Entries are {"name": ..., "hidden": ...}; hidden only hides the profile link, the
    # name is still the paper's author. Anything else passes through for PaperIn to judge.
    if not isinstance(raw, list):
        return raw
    return [a.get("name") if isinstance(a, dict) else a for a in raw]


def _organization(*raws: object) -> object:
    # {"name": "MHUGLab", "fullname": "Multimedia and ..."} on the paper or the item; the
    # first usable name wins, and garbage passes through only if nothing better exists.
    names = [
        _first(r.get("fullname") or None, r.get("name") or None) if isinstance(r, dict) else r
        for r in raws
    ]
    return next((n for n in names if isinstance(n, str) and n.strip()), _first(*names))


def _raw_id(item: object) -> str | None:
    paper = item.get("paper") if isinstance(item, dict) else None
    raw = paper.get("id") if isinstance(paper, dict) else None
    if not isinstance(raw, str):
        return None
    # Untrusted text headed for logs and reports: one short clean line.
    return clean_line(raw[:200])[:80] or None


def _unique(papers: Iterable[PaperIn]) -> list[PaperIn]:
    # A paper can sit on two pages when the listing shifts while we page through it.
    by_id: dict[str, PaperIn] = {}
    for paper in papers:
        by_id.setdefault(paper.id, paper)
    return list(by_id.values())
