"""The Daily Papers source, replayed from recorded responses (no network)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from papermail.sources.base import MAX_AUTHORS, SourceError, SourceUnreachable
from papermail.sources.hf import SAMPLE_DAY, fetch_daily, load_sample, parse_page
from tests.support.replay import Replay as RecordedReplay

FIXTURES = Path(__file__).parents[2] / "fixtures" / "hf"
DAY = dt.date(2026, 11, 26)
BASE = "https://hf.test"
MARKUP = re.compile(r"<[a-zA-Z/!]|&[a-zA-Z#][a-zA-Z0-9]*;")  # a tag or an entity


def page(name: str) -> list[object]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def ok(body: object) -> httpx.Response:
    # json.dumps escapes the lone surrogate in the hostile page the way the wire would.
    return httpx.Response(
        200, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


class Replay(RecordedReplay):
    @property
    def pages(self) -> list[str]:
        return self.param("p")


def fetch(replay: Replay, sleeps: list[float] | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    sleep: Callable[[float], None] = (sleeps if sleeps is not None else []).append
    with httpx.Client(transport=httpx.MockTransport(replay)) as client:
        return fetch_daily(client, day=DAY, base_url=BASE + "/", sleep=sleep, **kwargs)  # type: ignore[arg-type]


# Paging


def test_fetches_pages_until_an_empty_page() -> None:
    replay = Replay(
        ok(page("daily_2026-11-26_p0.json")),
        ok(page("daily_2026-11-26_p1.json")),
        ok(page("empty_page.json")),
    )
    result = fetch(replay, page_size=3)

    assert [p.id for p in result.papers] == [f"2611.3000{i}" for i in range(1, 7)]
    assert result.rejected == []
    assert result.pages == 3
    first = replay.requests[0].url
    assert (first.scheme, first.host, first.path) == ("https", "hf.test", "/api/daily_papers")
    assert dict(first.params) == {"date": "2026-11-26", "p": "0", "limit": "3"}
    assert replay.pages == ["0", "1", "2"]


def test_item_fields_are_mapped_from_paper_and_outer_item() -> None:
    result = fetch(Replay(ok(page("daily_2026-11-26_p0.json"))), page_size=50)
    smore, policies, bench = result.papers

    assert smore.upvotes == 142  # from paper
    assert smore.num_comments == 6  # from the outer item
    assert smore.authors == ["Ines Carvalho", "Tobias Lang", "Mina Park"]  # hidden kept
    assert smore.organization == "Multimedia and Human Understanding Group"
    assert smore.github_repo == "https://github.com/mhug/smore"
    assert smore.github_stars == 58
    assert smore.project_page == "https://smore-agents.github.io/"
    assert smore.ai_keywords == ["mixture of experts", "retrieval", "agents"]
    assert smore.thumbnail == (
        "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2611.30001.png"
    )
    assert smore.published_at == dt.datetime(2026, 11, 24, 17, 59, 58, tzinfo=dt.UTC)
    assert smore.submitted_on_daily_at == dt.datetime(
        2026, 11, 26, 3, 55, 12, 777000, tzinfo=dt.UTC
    )
    assert policies.organization == "Technical University of Munich"  # only on the item
    assert policies.github_repo is None and policies.project_page is None
    assert bench.thumbnail is None and bench.upvotes == 5


def test_short_page_is_the_last_page() -> None:
    replay = Replay(ok(page("daily_2026-11-26_p0.json")))
    result = fetch(replay, page_size=4)
    assert len(result.papers) == 3
    assert replay.pages == ["0"]
    assert result.pages == 1


def test_stops_at_max_pages() -> None:
    replay = Replay(ok(page("daily_2026-11-26_p0.json")), ok(page("daily_2026-11-26_p1.json")))
    result = fetch(replay, page_size=3, max_pages=2)
    assert replay.pages == ["0", "1"]
    assert len(result.papers) == 6


def test_empty_first_page_gives_no_papers() -> None:
    replay = Replay(ok(page("empty_page.json")))
    result = fetch(replay)
    assert (result.papers, result.rejected, result.pages) == ([], [], 1)


def test_paper_seen_on_two_pages_is_kept_once() -> None:
    replay = Replay(
        ok(page("daily_2026-11-26_p0.json")), ok(page("daily_2026-11-26_p1_shifted.json"))
    )
    result = fetch(replay, page_size=3)
    ids = [p.id for p in result.papers]
    assert ids == ["2611.30001", "2611.30002", "2611.30003", "2611.30004"]
    assert next(p for p in result.papers if p.id == "2611.30003").upvotes == 5  # first seen wins


# Hostile input


def hostile_page() -> list[object]:
    def paper(pid: str, **fields: object) -> dict[str, object]:
        return {"paper": {"id": pid, "title": "Sized", "upvotes": 1, **fields}}

    return [
        *page("hostile_page.json"),
        paper("2611.40101", title="T" * 1001),
        paper("2611.40102", summary="S" * 20_001),
        paper("2611.40103", authors=[{"name": f"Author {i}"} for i in range(5001)]),
        paper("2611.40104", authors=[{"name": f"Author {i}"} for i in range(1200)]),
    ]


def test_hostile_page_keeps_good_items_and_says_why_bad_ones_were_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        result = fetch(Replay(ok(hostile_page())))

    assert [p.id for p in result.papers] == [
        "2611.40001",
        "2611.40011",
        "2611.40012",
        "hep-th/9901001",
        "2611.40015",
        "2611.40104",
    ]
    reasons = {r.index: (r.paper_id, r.reason) for r in result.rejected}
    assert reasons == {
        1: (None, "item is a JSON string, not an object"),
        2: (None, "item is a JSON null, not an object"),
        3: (None, "item has no 'paper' object"),
        4: (None, "id: is missing"),
        5: (None, "id: must be a non-blank string, got '   '"),
        6: ("../../etc/passwd", "id: not an arXiv id: '../../etc/passwd'"),
        7: ("2611.40008", "upvotes: must be an integer, got 'lots'"),
        8: ("2611.40009", "title: is missing"),
        9: ("2611.40010", "title: must be a string, got ['a', 'list']"),
        13: ("2611.40014v2", "upvotes: must be an integer, got True"),
        15: ("2611.40016", "authors: must be a list, got 'Ada Lovelace'"),
        16: ("2611.40017", "upvotes: is implausibly large: 1000000000000"),
        17: (None, "id: must be a non-blank string, got 2611.40018"),
        18: ("2611.40101", "title: is 1001 characters long (max 1000)"),
        19: ("2611.40102", "summary: is 20001 characters long (max 20000)"),
        20: ("2611.40103", "authors: has 5001 entries (max 5000)"),
    }
    logged = caplog.text
    assert "skipping item 7 (paper 2611.40008)" in logged
    assert "dropping project_page='javascript:alert(1)'" in logged


def test_bad_optional_fields_become_none_without_losing_the_paper() -> None:
    papers = {p.id: p for p in parse_page(hostile_page()).papers}
    bad = papers["2611.40011"]
    assert (bad.title, bad.summary, bad.upvotes, bad.num_comments) == (
        "Bad Optional Fields Everywhere",
        "Still a fine paper.",
        30,
        2,
    )
    assert bad.project_page is None  # javascript:
    assert bad.github_repo is None  # user@host disguise
    assert bad.github_stars is None  # "lots"
    assert bad.thumbnail is None  # relative
    assert bad.organization is None and bad.ai_summary is None and bad.ai_keywords == []
    assert bad.published_at is None and bad.submitted_on_daily_at is None

    nulls = papers["2611.40012"]
    assert (nulls.summary, nulls.authors, nulls.upvotes, nulls.num_comments) == ("", [], 0, 0)
    assert papers["2611.40015"].authors == ["Ada Lovelace", "Plain String Name"]
    assert len(papers["2611.40104"].authors) == MAX_AUTHORS


def test_markup_in_titles_is_kept_as_text() -> None:
    markup = parse_page(hostile_page()).papers[0]
    assert markup.title == "<script>alert('x')</script> Robust Agents & <b>Friends</b>"
    assert markup.summary == "We show that x < y && y > z. <img src=x onerror=alert(1)>"


def test_control_characters_are_stripped_and_title_whitespace_collapsed() -> None:
    old = next(p for p in parse_page(hostile_page()).papers if p.id == "hep-th/9901001")
    assert old.title == "Deep Learning for Cats"  # NUL, BEL, lone surrogate, runs of spaces
    assert old.summary == "Line one.\nLine[31m two.\tTabbed."  # ESC gone, \n and \t kept
    assert old.authors == ["Old Style Author"]
    assert (old.upvotes, old.num_comments) == (0, 0)  # negative counts clamp to 0


@pytest.mark.parametrize(
    "paper_id", ["2602.23229", "2602.23229v2", "0704.0001", "hep-th/9901001", "math.GT/0309136v1"]
)
def test_arxiv_ids_are_accepted(paper_id: str) -> None:
    result = parse_page([{"paper": {"id": paper_id, "title": "T"}}])
    assert [p.id for p in result.papers] == [paper_id]


@pytest.mark.parametrize(
    "paper_id",
    [
        "2602.232",
        "2602.23229v",
        "2602 23229",
        "abc",
        "https://arxiv.org/abs/2602.23229",
        "2602.23229\n<script>",
    ],
)
def test_non_arxiv_ids_are_rejected(paper_id: str) -> None:
    result = parse_page([{"paper": {"id": paper_id, "title": "T"}}])
    assert result.papers == []
    assert "not an arXiv id" in result.rejected[0].reason


# Retries and failures


def test_429_waits_for_retry_after_then_succeeds() -> None:
    sleeps: list[float] = []
    replay = Replay(
        httpx.Response(429, headers={"Retry-After": "7"}), ok(page("daily_2026-11-26_p0.json"))
    )
    result = fetch(replay, sleeps, page_size=50)
    assert sleeps == [7.0]
    assert len(result.papers) == 3


def test_retry_after_is_capped() -> None:
    sleeps: list[float] = []
    fetch(Replay(httpx.Response(429, headers={"Retry-After": "86400"}), ok([])), sleeps)
    assert sleeps == [60.0]


def test_server_errors_are_retried_with_growing_jittered_backoff() -> None:
    sleeps: list[float] = []
    replay = Replay(httpx.Response(500), httpx.Response(502), ok(page("daily_2026-11-26_p0.json")))
    result = fetch(replay, sleeps, backoff_seconds=2.0)
    assert len(result.papers) == 3
    assert len(replay.requests) == 3
    assert 1.0 <= sleeps[0] <= 2.0 and 2.0 <= sleeps[1] <= 4.0


def test_exhausted_retries_raise_source_error_naming_the_url() -> None:
    sleeps: list[float] = []
    replay = Replay(*[httpx.Response(503, text="upstream overloaded")] * 3)
    with pytest.raises(SourceError) as failure:
        fetch(replay, sleeps, retries=2)
    assert not isinstance(failure.value, SourceUnreachable)  # the server answered
    message = str(failure.value)
    assert "https://hf.test/api/daily_papers?date=2026-11-26&p=0&limit=50" in message
    assert "HTTP 503" in message and "after 3 attempts" in message
    assert "upstream overloaded" in message
    assert len(replay.requests) == 3 and len(sleeps) == 2


def test_connect_errors_raise_source_unreachable() -> None:
    sleeps: list[float] = []
    replay = Replay(*[httpx.ConnectError] * 5)
    with pytest.raises(SourceUnreachable, match=r"hf\.test.*failed after 5 attempts: ConnectError"):
        fetch(replay, sleeps)
    assert len(replay.requests) == 5 and len(sleeps) == 4


def test_timeouts_are_retried() -> None:
    replay = Replay(httpx.ReadTimeout, ok(page("daily_2026-11-26_p0.json")))
    assert len(fetch(replay).papers) == 3


def test_invalid_date_fails_at_once_without_retry() -> None:
    sleeps: list[float] = []
    replay = Replay(httpx.Response(400, json=page("invalid_date_400.json")))
    with pytest.raises(SourceError, match="HTTP 400 Bad Request.*Invalid date") as failure:
        fetch(replay, sleeps)
    assert not isinstance(failure.value, SourceUnreachable)
    assert len(replay.requests) == 1 and sleeps == []


def test_non_json_page_raises_with_url_and_excerpt() -> None:
    replay = Replay(
        ok(page("daily_2026-11-26_p0.json")),
        httpx.Response(
            200, text="<html><body>Bad gateway</body></html>", headers={"Content-Type": "text/html"}
        ),
    )
    with pytest.raises(SourceError) as failure:
        fetch(replay, page_size=3)
    message = str(failure.value)
    assert "https://hf.test/api/daily_papers?date=2026-11-26&p=1&limit=3" in message
    assert "not JSON (text/html)" in message and "Bad gateway" in message


def test_json_object_instead_of_array_raises() -> None:
    replay = Replay(ok({"error": "maintenance"}))
    with pytest.raises(SourceError, match="JSON object instead of an array.*maintenance"):
        fetch(replay)


def test_absurdly_nested_json_raises_source_error() -> None:
    replay = Replay(httpx.Response(200, text="[" * 100_000 + "]" * 100_000))
    with pytest.raises(SourceError, match="not JSON"):
        fetch(replay)


@pytest.mark.parametrize("base_url", ["huggingface.co", "ftp://huggingface.co", ""])
def test_base_url_must_be_absolute_http(base_url: str) -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(Replay())) as client,
        pytest.raises(ValueError, match="absolute http"),
    ):
        fetch_daily(client, day=DAY, base_url=base_url)


def test_parse_page_refuses_anything_but_an_array() -> None:
    with pytest.raises(SourceError, match="expected a JSON array of papers, got a JSON object"):
        parse_page({"paper": {}})


# The bundled sample


def test_sample_is_forty_valid_papers_of_the_sample_day() -> None:
    result = load_sample()
    assert result.rejected == []
    assert len(result.papers) == 40
    assert len({p.id for p in result.papers}) == 40
    assert all(
        p.submitted_on_daily_at and p.submitted_on_daily_at.date() == SAMPLE_DAY
        for p in result.papers
    )
    assert all(p.published_at and p.published_at < p.submitted_on_daily_at for p in result.papers)
    # What a newcomer sees first: no markup (hostile text lives in tests/fixtures/hf).
    shown = {
        p.id: " ".join([p.title, p.summary, p.ai_summary or "", p.organization or "", *p.authors])
        for p in result.papers
    }
    assert [pid for pid, text in shown.items() if MARKUP.search(text)] == []
    assert sum(p.organization is not None for p in result.papers) >= 8
    assert sum(p.github_repo is not None for p in result.papers) >= 10
    assert 0 < sum(p.ai_summary is None for p in result.papers) < 10
    upvotes = [p.upvotes for p in result.papers]
    assert (min(upvotes), max(upvotes)) == (0, 250)
