"""--typed-topics: readers who type thousands of distinct topics between them, as a real
list's readers do, instead of picking from the bench's twelve."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from papermail.cli.main import main
from papermail_dev.bench.scratch import TOPICS, subscriber_rows
from papermail_dev.bench.typed_topics import FUNCTION_WORDS, TypedTopicsError, topic_phrases

TEXTS = [
    "Diffusion Policy for dexterous robot grasping with tactile sensing",
    "Sparse attention makes long-context language models cheaper, and the results show it",
]


# Seven words each once "for", "with", "and the results show" are dropped ("it" is too
# short a word): 7 + 6 + 5 phrases of one, two and three words each.
PHRASES = 36


def test_topics_are_distinct_phrases_of_the_texts_without_function_words() -> None:
    topics = topic_phrases(TEXTS, 20, seed=1)

    assert len(topics) == len(set(topics)) == 20
    text = " ".join(TEXTS).casefold()
    for topic in topics:
        assert 1 <= len(topic.split()) <= 3
        assert not set(topic.split()) & FUNCTION_WORDS
        assert all(word in text for word in topic.split())
    assert topic_phrases(TEXTS, 20, seed=1) == topics
    assert topic_phrases(TEXTS, 20, seed=2) != topics

    every = set(topic_phrases(TEXTS, PHRASES, seed=1))
    assert {"robot grasping", "long-context language models", "cheaper", "sparse"} <= every
    assert not {w for t in every for w in t.split()} & {"results", "the", "with", "it"}


def test_texts_too_short_for_the_topics_asked_is_an_error_that_says_how_many() -> None:
    with pytest.raises(TypedTopicsError, match=f"give {PHRASES} distinct topics, fewer than the"):
        topic_phrases(TEXTS, PHRASES + 1, seed=1)
    with pytest.raises(TypedTopicsError, match="at least 1"):
        topic_phrases(TEXTS, 0, seed=1)


def test_readers_type_the_topics_and_are_otherwise_the_default_readers() -> None:
    typed = topic_phrases(TEXTS, 30, seed=1)
    default = list(subscriber_rows(300, seed=5, now="2026-01-01T00:00:00+00:00"))
    rows = list(subscriber_rows(300, seed=5, now="2026-01-01T00:00:00+00:00", topics=typed))

    stated = [json.loads(row[4]) for row in rows]
    assert {t for topics in stated for t in topics} <= set(typed)
    assert len({t for topics in stated for t in topics}) > 20  # most of them, not a few
    for before, after, topics in zip(default, rows, stated, strict=True):
        assert len(topics) == len(json.loads(before[4])) == len(set(topics))
        assert before[:4] + before[5:] == after[:4] + after[5:]
    assert {t for row in default for t in json.loads(row[4])} <= set(TOPICS)


def test_topics_the_papers_cannot_give_are_one_line_of_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def seeding(*_args: object, **_kwargs: object) -> None:
        raise TypedTopicsError("the edition's papers give 13,825 distinct topics, fewer than")

    monkeypatch.setattr("papermail_dev.bench.run_plan_only", seeding)

    result = CliRunner().invoke(main, ["bench", "--plan-only", "--typed-topics", "50000"])

    assert result.exit_code == 1
    assert "error:" in result.output
    assert "13,825 distinct topics" in result.output
    assert "Traceback" not in result.output


def test_typed_topics_must_be_positive() -> None:
    result = CliRunner().invoke(main, ["bench", "--plan-only", "--typed-topics", "0"])

    assert result.exit_code == 2
    assert "--typed-topics" in result.output
