"""arXiv's description of papers asked for by id, replayed from recorded Atom answers."""

from __future__ import annotations

import httpx
import pytest

from papermail.sources.arxiv import PAUSE_SECONDS
from papermail.sources.arxiv_lookup import fetch_by_ids
from papermail.sources.base import FetchResult, SourceError
from tests.support.replay import Replay

from .test_arxiv import BASE, atom

BOTH = "by_id_2611.30002-3.xml"


def lookup(replay: Replay, ids: list[str], sleeps: list[float], **kwargs: object) -> FetchResult:
    with httpx.Client(transport=httpx.MockTransport(replay)) as client:
        return fetch_by_ids(
            client,
            ids=ids,
            base_url=BASE,
            sleep=sleeps.append,
            **kwargs,  # type: ignore[arg-type]
        )


def test_papers_come_back_described_primary_category_first() -> None:
    replay, sleeps = Replay(atom(BOTH)), []
    result = lookup(replay, ["2611.30002", "2611.30003"], sleeps)
    [request] = replay.requests
    assert request.url.path == "/api/query"
    assert dict(request.url.params) == {
        "id_list": "2611.30002,2611.30003",
        "start": "0",
        "max_results": "2",
    }
    described = {p.id: p for p in result.papers}
    assert described["2611.30002"].categories == ["cs.RO", "cs.LG"]  # type: ignore[attr-defined]
    assert described["2611.30003"].categories == ["cs.CV", "cs.CL"]  # type: ignore[attr-defined]
    assert sleeps == []  # one request, nothing before it


def test_ids_go_in_batches_paced_like_every_arxiv_request() -> None:
    replay, sleeps = Replay(atom(BOTH), atom(BOTH), atom(BOTH)), []
    lookup(replay, ["2611.30002", "2611.30003", "2611.30002", "hep-th/9901001"], sleeps, batch=2)
    # Asked once each, in order; two batches, the pause between them.
    assert replay.param("id_list") == ["2611.30002,2611.30003", "hep-th/9901001"]
    assert sleeps == [PAUSE_SECONDS]


def test_after_another_request_even_the_first_waits() -> None:
    replay, sleeps = Replay(atom(BOTH)), []
    lookup(replay, ["2611.30002"], sleeps, after_another=True)
    assert sleeps == [PAUSE_SECONDS]


def test_ids_not_of_arxivs_shape_are_never_asked_for() -> None:
    replay, sleeps = Replay(atom(BOTH)), []
    lookup(replay, ["2611.30002", "2611.30003&start=9", "x OR cat:cs.LG", ""], sleeps)
    assert replay.param("id_list") == ["2611.30002"]
    nothing = Replay()
    assert lookup(nothing, ["not an id"], []).papers == [] and nothing.requests == []


def test_fewer_entries_than_ids_is_an_answer_not_an_error() -> None:
    replay, sleeps = Replay(atom(BOTH)), []
    result = lookup(replay, ["2611.30002", "2611.30003", "2611.39999"], sleeps)
    assert sorted(p.id for p in result.papers) == ["2611.30002", "2611.30003"]


def test_an_error_answer_raises_and_bad_arguments_are_refused() -> None:
    with pytest.raises(SourceError, match="arXiv answered with an error"):
        lookup(Replay(atom("error_entry.xml", status=400)), ["2611.30002"], [])
    with pytest.raises(ValueError, match="batch"):
        lookup(Replay(), ["2611.30002"], [], batch=0)
    with (
        httpx.Client(transport=httpx.MockTransport(Replay())) as client,
        pytest.raises(ValueError, match="absolute"),
    ):
        fetch_by_ids(client, ids=["2611.30002"], base_url="export.arxiv.org")
