"""--arxiv-pool: a corpus's papers new on arXiv in the bench's edition, and readers who follow
arXiv categories. Checked on a small generated corpus of the shared corpus's shape."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from papermail.cli.main import main
from papermail.sources.arxiv_entries import ArxivPaperIn
from papermail_dev.bench.arxiv_pool import (
    FOLLOWED_FIELDS,
    ArxivPool,
    ArxivPoolError,
    arxiv_papers,
    followed_fields,
    reader_categories,
)
from papermail_dev.evaluate.corpus import load
from tests.support.corpus import write_corpus

AT = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "small.jsonl")


def test_the_pool_is_the_corpuss_first_papers_as_the_arxiv_ingest_stores_them(
    corpus: Path,
) -> None:
    source = load(corpus)
    skipped = {source[0].id, source[3].id}

    result = arxiv_papers(ArxivPool(corpus, 25), published_at=AT, exclude=skipped)

    expected = [p for p in source if p.id not in skipped][:25]
    assert [p.id for p in result.papers] == [p.id for p in expected]
    for paper, raw in zip(result.papers, expected, strict=True):
        assert isinstance(paper, ArxivPaperIn)
        assert paper.source == "arxiv"
        assert paper.submitted_on_daily_at is None  # new on arXiv, not featured
        assert paper.published_at == AT
        assert paper.title == raw.title
        assert paper.summary == raw.abstract
        assert paper.categories[0] == raw.primary
    assert result.rejected == []


def test_a_corpus_too_small_for_the_pool_asked_is_an_error_not_a_smaller_pool(
    corpus: Path,
) -> None:
    size = len(load(corpus))

    with pytest.raises(ArxivPoolError, match=f"{size - 1} papers to add, fewer than the {size}"):
        arxiv_papers(ArxivPool(corpus, size), published_at=AT, exclude={load(corpus)[0].id})


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (
            json.dumps(
                {"id": "not an id", "title": "T", "primary": "cs.RO", "listed": "2025-01-06"}
            ),
            "paper 'not an id' is not one arXiv lists: id: not an arXiv id: 'not an id'$",
        ),
        ('{"title": "no id"}', "broken.jsonl:1"),
        ("not json", "broken.jsonl:1"),
    ],
)
def test_a_paper_arxiv_would_not_list_is_named_in_the_error(
    tmp_path: Path, line: str, says: str
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(line + "\n", encoding="utf-8")

    with pytest.raises(ArxivPoolError, match=says):
        arxiv_papers(ArxivPool(broken, 1), published_at=AT)


def test_a_missing_corpus_is_an_error_that_names_it(tmp_path: Path) -> None:
    with pytest.raises(ArxivPoolError, match="cannot read the corpus .*absent.jsonl"):
        arxiv_papers(ArxivPool(tmp_path / "absent.jsonl", 5), published_at=AT)


def test_readers_follow_the_pools_biggest_fields(corpus: Path) -> None:
    papers = arxiv_papers(ArxivPool(corpus, 200), published_at=AT).papers
    primaries = Counter(p.categories[0] for p in papers if isinstance(p, ArxivPaperIn))

    fields = followed_fields(papers)

    assert len(fields) == FOLLOWED_FIELDS
    assert [primaries[f] for f in fields] == sorted(primaries.values(), reverse=True)[:6]


def test_reader_categories_are_deterministic_lists_of_up_to_two_fields() -> None:
    fields = ("cs.CV", "cs.CL", "cs.RO", "cs.LG")

    first = list(reader_categories(2_000, seed=3, fields=fields))

    assert first == list(reader_categories(2_000, seed=3, fields=fields))
    assert first != list(reader_categories(2_000, seed=4, fields=fields))
    follows = [json.loads(raw) for raw in first]
    assert {len(f) for f in follows} == {0, 1, 2}
    assert all(len(set(f)) == len(f) and set(f) <= set(fields) for f in follows)
    assert set().union(*map(set, follows)) == set(fields)


def test_arxiv_papers_without_a_pool_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["bench", "--plan-only", "--arxiv-papers", "300"])

    assert result.exit_code == 2
    assert "--arxiv-papers says how many of --arxiv-pool's papers: give both" in result.output


def test_a_pool_the_corpus_cannot_give_is_one_line_of_error(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def seeding(*_args: object, **_kwargs: object) -> None:
        raise ArxivPoolError(f"{corpus} has 482 papers to add, fewer than the 5000 asked")

    monkeypatch.setattr("papermail_dev.bench.run_plan_only", seeding)

    result = CliRunner().invoke(
        main, ["bench", "--plan-only", "--arxiv-pool", str(corpus), "--arxiv-papers", "5000"]
    )

    assert result.exit_code == 1
    assert "error:" in result.output
    assert "fewer than the 5000 asked" in result.output
    assert "Traceback" not in result.output
