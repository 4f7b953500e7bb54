"""arXiv's description of papers it already has, asked for by id (``id_list``).

Hugging Face's Daily Papers API gives no arXiv categories, and relevance reads them beside
a paper's words (pipeline/category_features.py). The new-submissions query
(sources/arxiv.py) describes the featured papers that were new in the categories it asks
for; ``fetch_by_ids`` describes the rest: a paper submitted a week before Hugging Face
featured it, or in a category nobody follows. Up to ``ID_BATCH`` ids a request, with the
same pause, retries, size and time budget as the new-submissions query.

arXiv answers an id it does not know with no entry, or (for a malformed one) with its
"Error" entry, which would fail the whole request: so only ids of arXiv's own shape are
asked for, and the others are left out, with a count in the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable

import httpx

from papermail.sources.arxiv import (
    PAUSE_SECONDS,
    Collected,
    Pacer,
    Window,
    get_feed,
    query_url,
)
from papermail.sources.base import ARXIV_ID, FetchResult
from papermail.sources.http import Budget

log = logging.getLogger(__name__)

ID_BATCH = 100  # ids a request: arXiv's own examples page 100 at a time
ALL_TIME = Window(
    start=dt.datetime(1991, 1, 1, tzinfo=dt.UTC),  # arXiv opened in August 1991
    end=dt.datetime(9999, 1, 1, tzinfo=dt.UTC),
)


def fetch_by_ids(
    client: httpx.Client,
    *,
    ids: Iterable[str],
    base_url: str,
    batch: int = ID_BATCH,
    retries: int = 4,
    backoff_seconds: float = 5.0,
    pause_seconds: float = PAUSE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    budget: Budget | None = None,
    after_another: bool = False,
) -> FetchResult:
    """arXiv's entries for ``ids`` (without versions), one per id, at its latest version.

    Raises SourceError (as ``fetch_new`` does) if any request fails; an id arXiv does not
    know is simply absent from the result. ``after_another``: a request to arXiv has just
    been made (the new-submissions query), so even the first one here waits the pause.
    """
    budget = budget or Budget()
    if batch < 1 or retries < 0 or pause_seconds < 0:
        raise ValueError("batch must be >= 1, retries and pause >= 0")
    url = query_url(base_url)
    wanted = list(dict.fromkeys(i.strip() for i in ids))
    asked = [i for i in wanted if ARXIV_ID.fullmatch(i)]
    if len(asked) < len(wanted):
        log.warning("not asking arXiv for %d ids not of its shape", len(wanted) - len(asked))
    pacer = Pacer(pause=pause_seconds, sleep=sleep, budget=budget, after_another=after_another)
    collected = Collected(ALL_TIME)
    pages = 0
    for first in range(0, len(asked), batch):
        chunk = asked[first : first + batch]
        params: dict[str, str | int] = {
            "id_list": ",".join(chunk),
            "start": 0,
            "max_results": len(chunk),
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
        collected.add(feed.entries, start=first)
        pages += 1
    result = collected.result(pages=pages)
    log.info(
        "arXiv described %d of %d papers asked for by id (%d rejected) in %d requests",
        len(result.papers),
        len(asked),
        len(result.rejected),
        pacer.requests,
    )
    return result
