"""The offline relevance evaluation, end to end on a small generated corpus of the same shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from papermail.pipeline.picking import planning_scorer
from papermail_dev.evaluate import EvalConfig, evaluate
from papermail_dev.evaluate.cli import main
from papermail_dev.evaluate.corpus import CorpusError, CorpusPaper, editions, load
from papermail_dev.evaluate.readers import TOPICS, Clicks, SimReader, fallback_topics
from papermail_dev.evaluate.timing import measure
from tests.support.corpus import DAYS, PER_DAY, VOCABULARY, write_corpus


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "small.jsonl")


def test_runs_end_to_end_writes_json_and_papermail_beats_both_baselines(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"

    code = main([str(corpus_file), "--readers", "40", "--seed", "3", "--out", str(out)])

    assert code == 0
    printed = capsys.readouterr().out
    assert "papermail" in printed and "topic-match" in printed and "trending" in printed
    report = json.loads(out.read_text())
    assert [d["day"] for d in report["days"]] == list(DAYS)
    assert report["days"][-1]["papers"] == PER_DAY + 2  # Saturday's two joined Monday's edition
    assert report["parameters"]["seed"] == 3 and report["parameters"]["readers"] == 40
    for day in report["days"]:
        for system in ("papermail", "topic_match", "trending", "ceiling"):
            assert 0.0 <= day[system] <= 1.0
        assert day["papermail"] <= day["ceiling"]
    summary = report["summary"]
    assert summary["checkpoint_edition"] == 6 and summary["feedback_days_before_it"] == 5
    at = summary["at_checkpoint"]
    assert at["papermail"] >= 2 * at["topic_match"]
    assert at["papermail"] >= 3 * at["trending"]
    assert at["papermail"] >= 0.9
    first = report["days"][0]  # cold start: topics only
    assert at["papermail"] >= first["papermail"]
    assert report["days"][-1]["feedback_per_reader"] > first["feedback_per_reader"] > 0


def test_papermail_is_measured_as_planning_picks_unless_told_otherwise(corpus_file: Path) -> None:
    corpus = load(corpus_file)
    planning = planning_scorer().method

    default = evaluate(corpus, EvalConfig(readers=12, days=2))
    other = "svm" if planning == "profile" else "profile"
    told = evaluate(corpus, EvalConfig(readers=12, days=2, method=other))

    assert default["parameters"]["method"] == planning
    assert told["parameters"]["method"] == other
    # The scorers learn differently from the first day's clicks.
    assert default["days"][1]["papermail"] != told["days"][1]["papermail"]


def test_trending_at_weight_zero_is_everyones_list_and_the_report_counts_what_stays(
    corpus_file: Path,
) -> None:
    corpus = load(corpus_file)

    pure = evaluate(corpus, EvalConfig(readers=12, days=3, weight=0.0))
    blended = evaluate(corpus, EvalConfig(readers=12, days=3))

    for day in pure["days"]:  # the blend at 0: the day's trending list, whatever the clicks
        assert day["papermail"] == day["trending"]
        assert day["trending_kept"] == 10
    for day in blended["days"]:
        assert 0 <= day["trending_kept"] < 10


def test_deterministic_for_a_seed(corpus_file: Path) -> None:
    corpus = load(corpus_file)

    def run(seed: int) -> object:
        report = evaluate(corpus, EvalConfig(readers=12, seed=seed, days=3))
        report.pop("seconds")
        return report

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_days_limits_the_editions(corpus_file: Path) -> None:
    report = evaluate(load(corpus_file), EvalConfig(readers=5, days=2))
    assert len(report["days"]) == 2
    # Fewer editions than "after five days of feedback": judged on the last one, saying so.
    assert report["summary"]["checkpoint_edition"] == 2
    assert report["summary"]["feedback_days_before_it"] == 1


def test_python_dash_m_runs_it(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-m", "papermail_dev.evaluate", str(corpus_file), "--readers", "3"]
        + ["--days", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["parameters"]["editions"] == 2


def test_a_broken_corpus_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "1", "title": "t", "primary": "cs.RO"}\n', encoding="utf-8")

    assert main([str(broken)]) == 2
    assert "broken.jsonl:1" in capsys.readouterr().err
    with pytest.raises(CorpusError):
        load(broken)
    assert main([str(tmp_path / "missing.jsonl")]) == 2


def test_small_days_roll_into_the_next_edition() -> None:
    def paper(pid: str, day: str) -> CorpusPaper:
        return CorpusPaper(pid, "t", "a", (), (), "cs.RO", day)

    papers = [paper(f"a{i}", "2025-01-01") for i in range(3)]
    papers += [paper(f"b{i}", "2025-01-02") for i in range(10)]
    papers += [paper(f"c{i}", "2025-01-03") for i in range(4)]

    grouped = editions(papers, min_papers=10)

    assert [(e.day, len(e.papers)) for e in grouped] == [("2025-01-02", 17)]


def test_topics_come_from_the_table_or_the_fields_titles(corpus_file: Path) -> None:
    corpus = load(corpus_file)
    assert "robotics" in TOPICS["cs.RO"]
    words = fallback_topics("astro-ph.GA", corpus)
    assert words and set(words) <= set(VOCABULARY["astro-ph.GA"].split())


def test_clicks_are_a_probability_not_every_card() -> None:
    reader = SimReader(0, frozenset({"cs.RO"}), ("robotics",))
    mine = [CorpusPaper(f"r{i}", "t", "a", (), (), "cs.RO", "d") for i in range(500)]
    other = [CorpusPaper(f"o{i}", "t", "a", (), (), "cs.CV", "d") for i in range(500)]

    liked, disliked = Clicks(p_like=0.3, p_dislike=0.1).react(
        reader, mine + other, np.random.default_rng(0)
    )

    assert {p.primary for p in liked} == {"cs.RO"} and {p.primary for p in disliked} == {"cs.CV"}
    assert 100 < len(liked) < 200 and 25 < len(disliked) < 80


def test_timings_report_each_reader_kind(corpus_file: Path) -> None:
    timings = measure(load(corpus_file), pool_size=200, readers_n=10)

    assert timings["pool"] == 200 and timings["features"] > 0
    assert timings["first_sight"]["topics"] > 0
    for kind in ("cold_start", "feedback_svm", "feedback_profile"):
        assert 0 < timings[kind]["score_median_ms"] <= timings[kind]["score_and_choose_median_ms"]


def test_papermail_learns_fields_from_categories_when_words_cannot_tell_them_apart(
    tmp_path: Path,
) -> None:
    """Every field's papers use every field's words: only arXiv's categories say which
    field a paper is in. papermail sees them and learns a reader's fields from the clicks;
    words only (``--no-categories``) it cannot."""
    path = write_corpus(tmp_path / "mixed.jsonl")
    everything = " ".join(VOCABULARY.values()).split()
    rng = np.random.default_rng(1)
    lines = []
    for line in path.read_text().splitlines():
        paper = json.loads(line)
        paper["title"] = "Towards " + " ".join(rng.choice(everything, 3, replace=False))
        paper["abstract"] = " ".join(rng.choice(everything, 30))
        lines.append(json.dumps(paper))
    path.write_text("\n".join(lines) + "\n")
    corpus = load(path)

    seen = evaluate(corpus, EvalConfig(readers=30, seed=2))["summary"]["at_checkpoint"]
    blind = evaluate(corpus, EvalConfig(readers=30, seed=2, categories=False))["summary"][
        "at_checkpoint"
    ]

    assert blind["papermail"] < 0.5
    assert seen["papermail"] >= 0.8
    assert seen["papermail"] >= 2 * blind["papermail"]


def test_papermail_sees_the_categories_primary_first_and_never_the_reader() -> None:
    paper = CorpusPaper(
        id="2501.00001",
        title="T",
        abstract="A",
        authors=("A",),
        categories=("cs.LG", "cs.RO"),
        primary="cs.RO",
        listed="2025-01-06",
    )
    assert paper.paper.categories == ("cs.RO", "cs.LG")
    assert paper.words_only.categories == ()
    assert paper.words_only.text == paper.paper.text


def test_no_categories_flag_reaches_the_report(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert (
        main(
            [
                str(corpus_file),
                "--readers",
                "5",
                "--days",
                "1",
                "--no-categories",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["parameters"]["categories"] is False
