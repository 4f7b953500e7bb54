"""The arXiv source, replayed from recorded Atom answers (no network)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import httpx
import pytest

from papermail.sources.arxiv import (
    PAUSE_SECONDS,
    SAMPLE_DAYS,
    SAMPLE_RESOURCE,
    Throttled,
    Window,
    fetch_new,
    load_arxiv_sample,
    search_query,
)
from papermail.sources.arxiv_entries import ArxivPaperIn
from papermail.sources.arxiv_taxonomy import (
    ARCHIVES,
    CATEGORIES,
    by_archive,
    category_name,
    parse_categories,
)
from papermail.sources.base import FetchResult, SourceError, SourceUnreachable
from papermail.sources.hf import SAMPLE_DAY, load_sample
from papermail.sources.http import Budget, DeadlineExceeded, ResponseTooLarge
from tests.support.replay import Replay as RecordedReplay

FIXTURES = Path(__file__).parents[2] / "fixtures" / "arxiv"
DAY = dt.date(2026, 11, 26)
BASE = "http://export.arxiv.test"
FIVE = ["cs.LG", "cs.CV", "cs.CL", "cs.RO", "cs.AI"]
MARKUP = re.compile(r"<[a-zA-Z/!]|&[a-zA-Z#][a-zA-Z0-9]*;")  # a tag or an entity


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def atom(name: str, *, status: int = 200, replace: tuple[str, str] | None = None) -> httpx.Response:
    content = body(name)
    if replace:
        content = content.replace(replace[0].encode(), replace[1].encode())
    return httpx.Response(
        status, content=content, headers={"Content-Type": "application/atom+xml; charset=utf-8"}
    )


def text(name: str, *, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=body(name), headers=headers or {})


class Replay(RecordedReplay):
    @property
    def starts(self) -> list[str]:
        return self.param("start")


def fetch(
    replay: Replay,
    sleeps: list[float] | None = None,
    *,
    days: list[dt.date] | None = None,
    categories: list[str] | None = None,
    page_size: int = 5,
    **kwargs: object,
) -> FetchResult:
    sleep: Callable[[float], None] = (sleeps if sleeps is not None else []).append
    with httpx.Client(transport=httpx.MockTransport(replay)) as client:
        return fetch_new(
            client,
            days=days or [DAY],
            categories=categories or FIVE,
            base_url=BASE + "/",
            page_size=page_size,
            sleep=sleep,
            **kwargs,  # type: ignore[arg-type]
        )


def the_day() -> Replay:
    return Replay(atom("day_2026-11-26_p0.xml"), atom("day_2026-11-26_p1.xml"))


# Paging


def test_a_day_of_five_categories_pages_until_the_entries_fall_before_the_day() -> None:
    replay, sleeps = the_day(), []
    started = time.monotonic()
    result = fetch(replay, sleeps)
    elapsed = time.monotonic() - started

    assert [p.id for p in result.papers] == [
        "2611.40001",
        "2611.40002",
        "2611.40008",
        "2611.40003",
        "2611.40004",
        "2611.40007",
    ]
    assert [(r.index, r.paper_id) for r in result.rejected] == [(4, "2611.4x006")]
    assert "not an arXiv id" in result.rejected[0].reason
    assert result.pages == 2 and replay.starts == ["0", "5"]
    assert sleeps == [PAUSE_SECONDS]  # one pause, between the two requests
    assert elapsed < 5  # the pause is injected, nothing waits
    first = replay.requests[0].url
    assert (first.scheme, first.host, first.path) == ("http", "export.arxiv.test", "/api/query")
    assert dict(first.params) == {
        "search_query": "cat:cs.LG OR cat:cs.CV OR cat:cs.CL OR cat:cs.RO OR cat:cs.AI",
        "sortBy": "submittedDate",
        "sortOrder": "descending",
        "start": "0",
        "max_results": "5",
    }


def test_every_field_arxiv_gives_is_kept() -> None:
    papers = {p.id: p for p in fetch(the_day()).papers}
    grasp = papers["2611.40002"]
    assert isinstance(grasp, ArxivPaperIn)
    assert grasp.title == "Open-Vocabulary Grasp Detection with Vision-Language Priors"
    assert grasp.authors == ["Sofia Rossi", "Jonas Berg"]
    assert grasp.summary.startswith("A grasp detector conditioned on text.")
    assert grasp.published_at == dt.datetime(2026, 11, 26, 15, 3, 27, tzinfo=dt.UTC)
    assert grasp.categories == ["cs.CV", "cs.RO", "cs.LG"]  # primary first
    assert grasp.arxiv_comment == "Accepted at ICRA 2027"
    assert grasp.journal_ref == "IEEE Robotics and Automation Letters 12(3), 2027"
    assert grasp.source == "arxiv"
    assert (grasp.upvotes, grasp.submitted_on_daily_at, grasp.organization) == (0, None, None)
    # Titles wrapped over lines come back as one line.
    assert papers["2611.40001"].title == "Legged Locomotion from Sparse Proprioception"


def test_a_short_page_ends_the_fetch() -> None:
    replay = Replay(atom("day_2026-11-26_p0.xml"))
    result = fetch(replay, page_size=6)  # five entries < six asked for
    assert replay.starts == ["0"] and result.pages == 1
    assert [p.id for p in result.papers] == ["2611.40001", "2611.40002", "2611.40008"]


def test_paging_stops_at_the_end_of_the_results() -> None:
    replay = Replay(atom("day_2026-11-26_p0.xml", replace=("Results>37<", "Results>5<")))
    assert fetch(replay).pages == 1


def test_max_pages_bounds_the_fetch() -> None:
    replay = Replay(atom("day_2026-11-26_p0.xml"))
    assert fetch(replay, max_pages=1).pages == 1


def test_several_days_are_one_window_and_one_pass() -> None:
    replay = Replay(
        atom("day_2026-11-26_p0.xml"),
        atom("day_2026-11-26_p1.xml", replace=("Results>37<", "Results>10<")),
    )
    result = fetch(replay, days=[DAY, dt.date(2026, 11, 25)])
    assert "2611.40005" in {p.id for p in result.papers}  # submitted on the 25th
    assert "2611.40009" not in {p.id for p in result.papers}  # on the 27th
    assert replay.starts == ["0", "5"]  # the end of the results, not a third page
    assert Window.of([DAY, dt.date(2026, 11, 24)]) == Window(
        start=dt.datetime(2026, 11, 24, tzinfo=dt.UTC), end=dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    )
    with pytest.raises(ValueError, match="at least one day"):
        Window.of([])


# Versions and cross-lists


def test_ids_lose_their_version_and_the_highest_version_wins() -> None:
    # The listing shifted between pages: page 2 repeats 2611.40002, now at v3.
    replay = Replay(
        atom("day_2026-11-26_p0.xml"),
        atom("day_2026-11-26_p1.xml", replace=("2611.40002v1", "2611.40002v3")),
    )
    result = fetch(replay)
    ids = [p.id for p in result.papers]
    assert ids.count("2611.40002") == 1 and all("v" not in i for i in ids)
    assert "2611.40001" in ids  # listed as 2611.40001v2


def test_a_cross_listed_paper_appears_once_with_its_primary_category_first() -> None:
    result = fetch(the_day())
    grasp = [p for p in result.papers if p.id == "2611.40002"]
    assert len(grasp) == 1
    assert isinstance(grasp[0], ArxivPaperIn) and grasp[0].categories[0] == "cs.CV"


def test_old_style_ids_are_kept_without_their_version() -> None:
    replay = Replay(
        atom(
            "earlier_2026-11-26_v1.xml",
            replace=(
                "http://arxiv.org/abs/2611.40001v1</id>",
                "http://arxiv.org/abs/hep-th/9901001v3</id>",
            ),
        )
    )
    assert [p.id for p in fetch(replay).papers] == ["hep-th/9901001"]


# Weekends and errors


def test_a_weekend_without_submissions_is_an_empty_result() -> None:
    replay = Replay(atom("weekend_2026-11-28.xml"))
    result = fetch(replay, days=[dt.date(2026, 11, 28)])
    assert (result.papers, result.rejected, result.pages) == ([], [], 1)
    assert len(replay.requests) == 1


@pytest.mark.parametrize("status", [200, 400])
def test_an_error_entry_is_an_error_and_is_not_retried(status: int) -> None:
    replay = Replay(atom("error_entry.xml", status=status))
    with pytest.raises(SourceError, match="max_results must be less than or equal to 30000"):
        fetch(replay)
    assert len(replay.requests) == 1


def test_a_paper_titled_error_is_a_paper() -> None:
    title = "Legged Locomotion from Sparse Proprioception (draft)"
    replay = Replay(atom("earlier_2026-11-26_v1.xml", replace=(title, "Error")))
    assert [p.title for p in fetch(replay).papers] == ["Error"]


def test_rate_exceeded_is_a_throttle_retried_after_a_backoff() -> None:
    replay = Replay(
        text("rate_exceeded.txt"),
        text("rate_exceeded.txt", status=503),
        atom("weekend_2026-11-28.xml"),
    )
    sleeps: list[float] = []
    result = fetch(replay, sleeps, backoff_seconds=10.0)
    assert result.papers == [] and len(replay.requests) == 3
    assert len(sleeps) == 2
    assert 5.0 <= sleeps[0] <= 10.0 and 10.0 <= sleeps[1] <= 20.0  # equal jitter, doubling
    assert all(s >= PAUSE_SECONDS for s in sleeps)  # a retry never comes sooner than the pause


def test_a_throttle_that_never_lifts_raises_throttled() -> None:
    replay = Replay(*(text("rate_exceeded.txt") for _ in range(3)))
    with pytest.raises(Throttled, match="Rate exceeded") as raised:
        fetch(replay, retries=2)
    assert isinstance(raised.value, SourceUnreachable)  # the task retries it later
    assert len(replay.requests) == 3


def test_a_503_waits_for_its_retry_after() -> None:
    replay = Replay(
        text("unavailable_503.html", status=503, headers={"Retry-After": "7"}),
        atom("weekend_2026-11-28.xml"),
    )
    sleeps: list[float] = []
    fetch(replay, sleeps)
    assert sleeps == [7.0]


def test_a_huge_retry_after_is_capped() -> None:
    replay = Replay(
        text("unavailable_503.html", status=503, headers={"Retry-After": "86400"}),
        atom("weekend_2026-11-28.xml"),
    )
    sleeps: list[float] = []
    fetch(replay, sleeps)
    assert sleeps == [60.0]


def test_network_failures_are_retried_then_reported_as_unreachable() -> None:
    replay = Replay(httpx.ConnectError, httpx.ReadTimeout, atom("weekend_2026-11-28.xml"))
    assert fetch(replay).papers == []
    replay = Replay(httpx.ConnectError, httpx.ConnectError)
    with pytest.raises(SourceUnreachable, match="after 2 attempts"):
        fetch(replay, retries=1)


def test_a_404_is_not_retried() -> None:
    replay = Replay(httpx.Response(404, text="Not Found"))
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch(replay)
    assert len(replay.requests) == 1


def test_an_answer_that_is_not_atom_is_an_error() -> None:
    replay = Replay(httpx.Response(200, text="<html><body>maintenance</body></html>"))
    with pytest.raises(SourceError, match="not an Atom feed"):
        fetch(replay)


def test_an_empty_page_inside_the_results_is_retried() -> None:
    empty_but_more = atom("weekend_2026-11-28.xml", replace=("Results>0<", "Results>12<"))
    replay = Replay(empty_but_more, atom("day_2026-11-26_p0.xml"), atom("day_2026-11-26_p1.xml"))
    result = fetch(replay)
    assert len(result.papers) == 6 and replay.starts == ["0", "0", "5"]


def test_an_error_on_the_second_page_returns_nothing() -> None:
    replay = Replay(atom("day_2026-11-26_p0.xml"), atom("error_entry.xml"))
    with pytest.raises(SourceError):
        fetch(replay)


# Hostile entries


def test_hostile_entries_are_rejected_one_by_one_with_a_reason() -> None:
    replay = Replay(atom("hostile_2026-11-26.xml"))
    result = fetch(replay, page_size=10)
    reasons = {r.paper_id: r.reason for r in result.rejected}
    assert reasons == {
        "https://evil.example/abs/2611.50001v1": (
            "id: not an arXiv abstract URL: 'https://evil.example/abs/2611.50001v1'"
        ),
        "2611.50002": "title: is blank",
        "2611.50003": "title: is 1512 characters long (max 1000)",
        "2611.50004": "published: missing or not an ISO 8601 timestamp: 'yesterday-ish'",
        "2611.50006": "summary: is 24999 characters long (max 20000)",
        "http://arxiv.org/abs/2611.50007v1?x=<b>": (
            "id: not an arXiv abstract URL: 'http://arxiv.org/abs/2611.50007v1?x=<b>'"
        ),
    }
    [kept] = result.papers
    assert isinstance(kept, ArxivPaperIn)
    # Markup stays as written (escaping is the renderer's job); the text is one clean line.
    assert kept.title == "<script>alert(1)</script> Robust Markup & Entities"
    assert kept.authors == ["Zoë Ångström", "B\u200bob"]
    assert kept.categories == ["cs.RO", "physics.optics"]  # repeated and garbage codes dropped
    assert kept.arxiv_comment is None  # 3,000 characters: dropped, the paper kept
    assert kept.journal_ref == "J. Hostile Stud. 1 (2026)"


def test_categories_cannot_smuggle_anything_into_the_query() -> None:
    assert search_query(["cs.RO", "cs.RO", "cond-mat.str-el"]) == "cat:cs.RO OR cat:cond-mat.str-el"
    for bad in (["cs.RO) OR all:x"], ["cs.RO&start=9"], []):
        with pytest.raises(ValueError):
            search_query(bad)


# The size cap and the deadline


def test_an_oversize_answer_is_refused() -> None:
    replay = Replay(atom("day_2026-11-26_p0.xml"))
    with pytest.raises(ResponseTooLarge):
        fetch(replay, budget=Budget(max_bytes=2048))


def test_the_deadline_covers_the_pauses() -> None:
    now = [0.0]
    budget = Budget(seconds=10.0, clock=lambda: now[0])

    def sleep(seconds: float) -> None:
        now[0] += seconds

    replay = Replay(*(text("unavailable_503.html", status=503, headers={"Retry-After": "6"}),) * 3)
    with (
        httpx.Client(transport=httpx.MockTransport(replay)) as client,
        pytest.raises(DeadlineExceeded, match="no time"),
    ):
        fetch_new(client, days=[DAY], categories=FIVE, base_url=BASE, sleep=sleep, budget=budget)
    assert len(replay.requests) == 2  # 6 s waited, 4 s left: not enough for another 6


def test_bad_arguments_are_refused() -> None:
    with httpx.Client(transport=httpx.MockTransport(Replay())) as client:
        with pytest.raises(ValueError, match="absolute"):
            fetch_new(client, days=[DAY], categories=FIVE, base_url="ftp://x")
        with pytest.raises(ValueError):
            fetch_new(client, days=[DAY], categories=FIVE, base_url=BASE, page_size=0)


# The taxonomy


def test_the_taxonomy_names_the_codes_papermail_offers() -> None:
    assert {"cs.LG", "cs.CV", "cs.CL", "cs.RO", "cs.AI", "stat.ML", "math.OC", "q-bio.NC"} <= set(
        CATEGORIES
    )
    assert {c for c in CATEGORIES if c.startswith("eess.")} == {
        "eess.AS",
        "eess.IV",
        "eess.SP",
        "eess.SY",
    }
    assert len([c for c in CATEGORIES if c.startswith("cs.")]) == 40
    assert category_name("cs.RO") == "Robotics" and category_name("cs.XX") is None
    assert parse_categories(" cs.LG, cs.CV cs.LG ") == ["cs.LG", "cs.CV"]
    with pytest.raises(ValueError, match="unknown arXiv categories: cs.Cv, physics"):
        parse_categories("cs.Cv,physics,cs.RO")
    with pytest.raises(ValueError, match="names no arXiv category"):
        parse_categories(" , ")


def test_the_forms_group_every_code_once_under_its_archives_name() -> None:
    groups = by_archive()
    assert [name for name, _ in groups] == list(ARCHIVES.values())
    assert [code for _, codes in groups for code, _ in codes] == list(CATEGORIES)
    assert ("cs.RO", "Robotics") in dict(groups)["Computer Science"]
    assert dict(groups)["Quantitative Biology"] == [("q-bio.NC", "Neurons and Cognition")]


# The bundled sample


def test_the_sample_is_read_exactly_like_a_live_answer() -> None:
    content = resources.files("papermail.data").joinpath(SAMPLE_RESOURCE).read_bytes()
    replay = Replay(httpx.Response(200, content=content))
    live = fetch(replay, days=list(SAMPLE_DAYS), page_size=100)
    assert load_arxiv_sample() == live
    assert len(replay.requests) == 1


def test_the_sample_is_new_robotics_security_and_vision_with_two_hf_papers() -> None:
    result = load_arxiv_sample()
    assert result.rejected == [] and len(result.papers) == 16
    papers = {p.id: p for p in result.papers}
    assert all(isinstance(p, ArxivPaperIn) for p in result.papers)
    primary = Counter(p.categories[0] for p in result.papers if isinstance(p, ArxivPaperIn))
    assert primary["cs.RO"] >= 5 and primary["cs.CR"] == 3 and primary["cs.CV"] >= 3
    hf = {p.id: p for p in load_sample().papers}
    both = sorted(set(papers) & set(hf))
    assert both == ["2611.14797", "2611.19975"]  # version 2 on arXiv, featured on HF
    assert all(papers[i].title == hf[i].title for i in both)
    new = [p for i, p in papers.items() if i not in hf]
    assert all(p.published_at and p.published_at.date() == SAMPLE_DAY for p in new)
    cross_listed = [p for p in new if isinstance(p, ArxivPaperIn) and len(p.categories) > 1]
    assert len(cross_listed) >= 2
    notes = [p for p in new if isinstance(p, ArxivPaperIn) and (p.arxiv_comment or p.journal_ref)]
    assert any(isinstance(p, ArxivPaperIn) and p.journal_ref for p in notes)
    assert [p.id for p in result.papers if MARKUP.search(f"{p.title} {p.summary}")] == []
