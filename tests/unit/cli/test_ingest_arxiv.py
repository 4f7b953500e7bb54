"""`papermail ingest --source arxiv|all`, replayed through the Wiring's own HTTP client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from papermail.cli.main import main
from papermail.config import get_settings
from papermail.models import JobRun, Paper
from papermail.sources import arxiv
from papermail.wiring import Wiring

FIXTURES = Path(__file__).parents[2] / "fixtures"
Handler = Callable[[httpx.Request], httpx.Response]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


class Upstream:
    """arXiv and Hugging Face, answering from recorded files; remembers every request."""

    def __init__(self, arxiv_files: list[str], hf_files: list[str] | None = None) -> None:
        self.arxiv = [(FIXTURES / "arxiv" / n).read_bytes() for n in arxiv_files]
        self.hf = [(FIXTURES / "hf" / n).read_bytes() for n in hf_files or []]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.arxiv if request.url.host == "export.arxiv.org" else self.hf
        if not queue:
            raise AssertionError(f"unexpected request {request.url}")
        return httpx.Response(200, content=queue.pop(0))


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Upstream]:
    sleeps: list[float] = []
    monkeypatch.setattr(arxiv, "pause", sleeps.append)  # arXiv's 3 s pause, not waited
    monkeypatch.setenv("PAPERMAIL_ARXIV_PAGE_SIZE", "5")  # the recorded pages' size
    get_settings.cache_clear()

    def replaying(*arxiv_files: str, hf: list[str] | None = None) -> Upstream:
        replay = Upstream(list(arxiv_files), hf)
        real = Wiring.http_client

        def http_client(self: Wiring) -> httpx.Client:
            client = real(self)  # the real headers (User-Agent) and timeouts
            client._transport = httpx.MockTransport(replay)
            return client

        monkeypatch.setattr(Wiring, "http_client", http_client)
        return replay

    return replaying


def papers(var_dir: Path) -> dict[str, Paper]:
    from papermail.wiring import Wiring

    w = Wiring(get_settings())
    with w.sessions() as session:
        return {p.id: p for p in session.scalars(select(Paper))}


def journal(var_dir: Path) -> list[JobRun]:
    w = Wiring(get_settings())
    with w.sessions() as session:
        return list(session.scalars(select(JobRun).order_by(JobRun.id)))


def test_ingest_arxiv_stores_a_day_of_the_configured_categories(
    var_dir: Path, upstream: Callable[..., Upstream]
) -> None:
    replay = upstream("day_2026-11-26_p0.xml", "day_2026-11-26_p1.xml")
    result = run("ingest", "--source", "arxiv", "--date", "2026-11-26")

    assert result.exit_code == 0, result.output
    assert "Ingest (arXiv)" in result.output
    assert "│ 6       │ 6   │ 0       │ 1        │" in result.output
    assert "skipped item #4 2611.4x006" in result.output
    assert len(replay.requests) == 2
    first = replay.requests[0]
    assert first.headers["User-Agent"].startswith("papermail/")
    assert first.url.params["search_query"] == (
        "cat:cs.LG OR cat:cs.CV OR cat:cs.CL OR cat:cs.RO OR cat:cs.AI"
    )
    stored = papers(var_dir)
    assert set(stored) == {
        "2611.40001",
        "2611.40002",
        "2611.40003",
        "2611.40004",
        "2611.40007",
        "2611.40008",
    }
    assert stored["2611.40002"].categories == ["cs.CV", "cs.RO", "cs.LG"]
    [run_row] = journal(var_dir)
    assert (run_row.stage, run_row.ok) == ("ingest", True)
    assert run_row.detail["source"] == "arxiv"
    assert run_row.detail["days"] == ["2026-11-26"] and run_row.detail["pages"] == 2


def test_ingest_arxiv_with_chosen_categories(
    var_dir: Path, upstream: Callable[..., Upstream]
) -> None:
    replay = upstream("weekend_2026-11-28.xml")
    result = run(
        "ingest", "--source", "arxiv", "--date", "2026-11-28", "--category", "cs.RO",
        "--category", "stat.ML",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert replay.requests[0].url.params["search_query"] == "cat:cs.RO OR cat:stat.ML"
    assert papers(var_dir) == {}  # a weekend: nothing new, and no error


def test_an_arxiv_error_writes_nothing(var_dir: Path, upstream: Callable[..., Upstream]) -> None:
    upstream("day_2026-11-26_p0.xml", "error_entry.xml")
    result = run("ingest", "--source", "arxiv", "--date", "2026-11-26")
    assert result.exit_code == 1
    assert "ingest failed, nothing was written" in result.output
    assert "max_results must be less than or equal to 30000" in result.output
    assert papers(var_dir) == {}
    [run_row] = journal(var_dir)
    assert run_row.ok is False and run_row.detail["source"] == "arxiv"


def test_ingest_all_merges_a_paper_on_both_sources(
    var_dir: Path, upstream: Callable[..., Upstream]
) -> None:
    replay = upstream(
        "hf_merge_2026-11-24.xml", "by_id_2611.30002-3.xml", hf=["daily_2026-11-26_p0.json"]
    )
    result = run("ingest", "--source", "all", "--date", "2026-11-24")
    assert result.exit_code == 0, result.output
    assert "Ingest (Hugging Face)" in result.output and "Ingest (arXiv)" in result.output
    stored = papers(var_dir)
    merged = stored["2611.30001"]
    assert (merged.source, merged.upvotes) == ("hf", 142)
    assert merged.journal_ref == "Proc. AgentsWS 2026, pp. 1-14"
    # The two featured papers the new submissions did not cover, described by id.
    lookup = replay.requests[-1]
    assert lookup.url.params["id_list"] == "2611.30002,2611.30003"
    assert "search_query" not in lookup.url.params
    assert stored["2611.30002"].categories == ["cs.RO", "cs.LG"]
    assert stored["2611.30003"].categories == ["cs.CV", "cs.CL"]
    assert stored["2611.30002"].source == "hf" and stored["2611.30002"].arxiv_comment == (
        "8 pages, 5 figures"
    )
    arxiv_run = journal(var_dir)[-1]
    assert arxiv_run.detail["described"] == 2 and arxiv_run.detail["describe_asked"] == 2

    # Described once: the next run asks arXiv for nothing by id.
    again = upstream("hf_merge_2026-11-24.xml")
    assert run("ingest", "--source", "arxiv", "--date", "2026-11-24").exit_code == 0
    assert len(again.requests) == 1 and journal(var_dir)[-1].detail["described"] == 0


def test_a_failed_description_keeps_the_new_submissions_and_says_so(
    var_dir: Path, upstream: Callable[..., Upstream]
) -> None:
    upstream("hf_merge_2026-11-24.xml", "error_entry.xml", hf=["daily_2026-11-26_p0.json"])
    result = run("ingest", "--source", "all", "--date", "2026-11-24")
    assert result.exit_code == 0, result.output
    stored = papers(var_dir)
    assert stored["2611.30001"].categories == ["cs.LG", "cs.AI", "cs.CL"]
    assert stored["2611.30002"].categories == []
    arxiv_run = journal(var_dir)[-1]
    assert arxiv_run.ok is True and arxiv_run.detail["described"] == 0
    assert "arXiv answered with an error" in arxiv_run.detail["describe_error"]


def test_ingest_arxiv_waits_the_configured_pause_between_requests(
    var_dir: Path, upstream: Callable[..., Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(arxiv, "pause", sleeps.append)
    monkeypatch.setenv("PAPERMAIL_ARXIV_PAUSE_SECONDS", "1.5")
    get_settings.cache_clear()
    replay = upstream("day_2026-11-26_p0.xml", "day_2026-11-26_p1.xml")
    assert run("ingest", "--source", "arxiv", "--date", "2026-11-26").exit_code == 0
    assert len(replay.requests) == 2 and sleeps == [1.5]


def test_ingest_arxiv_sample_stores_the_bundled_answer_offline(
    var_dir: Path, upstream: Callable[..., Upstream]
) -> None:
    replay = upstream()  # any request would fail the test
    result = run("ingest", "--source", "arxiv", "--sample")
    assert result.exit_code == 0, result.output
    assert "Ingest (arXiv)" in result.output
    assert "│ 16      │ 16  │ 0       │ 0        │" in result.output
    assert replay.requests == []
    stored = papers(var_dir)
    robotics = [p for p in stored.values() if p.categories and p.categories[0] == "cs.RO"]
    assert len(robotics) >= 5 and all(p.source == "arxiv" for p in stored.values())
    [run_row] = journal(var_dir)
    assert run_row.detail["source"] == "bundled arXiv sample" and run_row.ok


def test_ingest_all_samples_merges_the_papers_on_both_sources(
    var_dir: Path, upstream: Callable[..., Upstream]
) -> None:
    upstream()
    result = run("ingest", "--source", "all", "--sample")
    assert result.exit_code == 0, result.output
    stored = papers(var_dir)
    both = [p for p in stored.values() if p.source == "hf" and p.categories]
    assert sorted(p.id for p in both) == ["2611.14797", "2611.19975"]
    assert both[0].upvotes > 0 and both[0].submitted_on_daily_at is not None
    assert "│ 16      │ 14  │ 2       │ 0        │" in result.output  # the arXiv table


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--source", "arxiv", "--category", "cs.XX"), "unknown arXiv category: cs.XX"),
        (("--source", "arxiv", "--sample", "--category", "cs.RO"), "--sample is a fixed day"),
        (("--sample", "--date", "2026-11-26"), "drop --date and --category"),
        (("--category", "cs.RO"), "--category chooses arXiv categories"),
        (("--source", "medrxiv"), "Invalid value for '--source'"),
    ],
)
def test_bad_ingest_options_get_one_clear_line(
    var_dir: Path, args: tuple[str, ...], says: str
) -> None:
    result = run("ingest", *args)
    assert result.exit_code != 0
    assert says in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
