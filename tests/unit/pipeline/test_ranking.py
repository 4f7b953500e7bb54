"""Trending score and per-subscriber selection: pure functions, pinned without a database."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from papermail.pipeline import ranking
from papermail.pipeline.ranking import Candidate, Interests, PaperSignals, Snapshot
from tests.conftest import FIXED_NOW

NOW = FIXED_NOW
HOUR = dt.timedelta(hours=1)


def signals(
    pid: str,
    *,
    upvotes: int = 10,
    comments: int = 0,
    stars: int = 0,
    age: dt.timedelta | None = HOUR,
) -> PaperSignals:
    return PaperSignals(
        paper_id=pid,
        upvotes=upvotes,
        num_comments=comments,
        github_stars=stars,
        submitted_at=None if age is None else NOW - age,
    )


def candidate(
    pid: str,
    rank: int,
    *,
    title: str = "A paper",
    summary: str = "",
    keywords: tuple[str, ...] = (),
    organization: str | None = None,
    authors: tuple[str, ...] = (),
) -> Candidate:
    return Candidate(
        paper_id=pid,
        rank=rank,
        title=title,
        summary=summary,
        keywords=keywords,
        organization=organization,
        authors=authors,
    )


def ids(selection: ranking.Selection) -> list[str]:
    return [pid for pid, _reason in selection]


# --- trending score ---------------------------------------------------------------------


def test_score_is_hacker_news_decay_of_upvotes_minus_one() -> None:
    score = ranking.trending_score(signals("a", upvotes=11, age=dt.timedelta(hours=3)), now=NOW)
    assert score == pytest.approx(10 / 5**1.8)


def test_score_without_submission_time_counts_as_brand_new() -> None:
    score = ranking.trending_score(signals("a", upvotes=11, age=None), now=NOW)
    assert score == pytest.approx(10 / 2**1.8)


def test_submission_in_the_future_is_not_rewarded_beyond_age_zero() -> None:
    future = ranking.trending_score(signals("a", upvotes=11, age=-5 * HOUR), now=NOW)
    fresh = ranking.trending_score(signals("a", upvotes=11, age=dt.timedelta(0)), now=NOW)
    assert future == pytest.approx(fresh)


def test_single_or_zero_upvotes_score_zero_not_negative() -> None:
    assert ranking.trending_score(signals("a", upvotes=1), now=NOW) == 0
    assert ranking.trending_score(signals("a", upvotes=0), now=NOW) == 0


def test_older_paper_with_same_votes_ranks_lower() -> None:
    ranked = ranking.rank(
        [signals("old", upvotes=50, age=20 * HOUR), signals("new", upvotes=50, age=2 * HOUR)],
        now=NOW,
    )
    assert [s.paper_id for s in ranked] == ["new", "old"]
    assert ranked[0].score > ranked[1].score


def test_decay_lets_a_fresh_paper_beat_a_stale_leader() -> None:
    ranked = ranking.rank(
        [signals("stale", upvotes=200, age=48 * HOUR), signals("fresh", upvotes=30, age=HOUR)],
        now=NOW,
    )
    assert [s.paper_id for s in ranked] == ["fresh", "stale"]


def test_velocity_adds_six_hours_of_expected_votes() -> None:
    plain = ranking.trending_score(signals("a", upvotes=11, age=2 * HOUR), now=NOW)
    rising = ranking.trending_score(
        signals("a", upvotes=11, age=2 * HOUR), now=NOW, votes_per_hour=5.0
    )
    assert plain == pytest.approx(10 / 4**1.8)
    assert rising == pytest.approx((10 + 5 * 6) / 4**1.8)


def test_velocity_lifts_a_fast_riser_over_a_slightly_bigger_stale_paper() -> None:
    papers = [signals("big", upvotes=60), signals("riser", upvotes=40)]
    assert [s.paper_id for s in ranking.rank(papers, now=NOW)] == ["big", "riser"]
    boosted = ranking.rank(papers, now=NOW, velocities={"riser": 10.0})
    assert [s.paper_id for s in boosted] == ["riser", "big"]


def test_rank_limit_keeps_the_best() -> None:
    papers = [signals(f"p{i}", upvotes=i + 2) for i in range(10)]
    ranked = ranking.rank(papers, now=NOW, limit=3)
    assert [s.paper_id for s in ranked] == ["p9", "p8", "p7"]


def test_rank_of_nothing_is_empty() -> None:
    assert ranking.rank([], now=NOW) == []


# --- ties ---------------------------------------------------------------------------------


def test_equal_scores_break_on_comments_first() -> None:
    ranked = ranking.rank(
        [signals("a", comments=1, stars=900), signals("b", comments=5, stars=0)], now=NOW
    )
    assert [s.paper_id for s in ranked] == ["b", "a"]


def test_equal_scores_and_comments_break_on_github_stars() -> None:
    ranked = ranking.rank(
        [signals("a", comments=2, stars=10), signals("b", comments=2, stars=99)], now=NOW
    )
    assert [s.paper_id for s in ranked] == ["b", "a"]


def test_full_tie_breaks_on_id_whatever_the_input_order() -> None:
    papers = [signals(pid, comments=2, stars=3) for pid in ("2611.3", "2611.1", "2611.2")]
    for ordering in (papers, papers[::-1]):
        assert [s.paper_id for s in ranking.rank(ordering, now=NOW)] == [
            "2611.1",
            "2611.2",
            "2611.3",
        ]


def test_float_noise_does_not_defeat_the_tie_break() -> None:
    # Same upvotes reached by different velocity arithmetic: scores differ in the last bits.
    a = signals("a", upvotes=11, comments=0)
    b = signals("b", upvotes=11, comments=3)
    ranked = ranking.rank([a, b], now=NOW, velocities={"a": 0.1 + 0.2, "b": 0.3})
    assert [s.paper_id for s in ranked] == ["b", "a"]


# --- velocity -----------------------------------------------------------------------------


def snap(ago: dt.timedelta, upvotes: int) -> Snapshot:
    return Snapshot(observed_at=NOW - ago, upvotes=upvotes)


def test_velocity_is_votes_per_hour_between_first_and_last_snapshot_in_window() -> None:
    history = [snap(4 * HOUR, 10), snap(3 * HOUR, 14), snap(2 * HOUR, 30)]
    assert ranking.velocity(history, now=NOW) == pytest.approx(10.0)


def test_velocity_ignores_snapshot_order() -> None:
    history = [snap(2 * HOUR, 30), snap(4 * HOUR, 10)]
    assert ranking.velocity(history, now=NOW) == pytest.approx(10.0)


def test_velocity_ignores_snapshots_outside_the_window() -> None:
    history = [snap(10 * HOUR, 0), snap(2 * HOUR, 10), snap(HOUR, 20)]
    assert ranking.velocity(history, now=NOW) == pytest.approx(10.0)


def test_velocity_ignores_snapshots_after_now() -> None:
    history = [snap(2 * HOUR, 10), snap(HOUR, 20), snap(-HOUR, 500)]
    assert ranking.velocity(history, now=NOW) == pytest.approx(10.0)


def test_velocity_window_edge_is_inclusive() -> None:
    history = [snap(ranking.VELOCITY_WINDOW, 0), snap(dt.timedelta(0), 60)]
    assert ranking.velocity(history, now=NOW) == pytest.approx(10.0)


def test_velocity_needs_two_snapshots() -> None:
    assert ranking.velocity([], now=NOW) == 0.0
    assert ranking.velocity([snap(HOUR, 50)], now=NOW) == 0.0


def test_velocity_of_snapshots_closer_than_min_span_is_zero() -> None:
    close = ranking.MIN_VELOCITY_SPAN - dt.timedelta(seconds=1)
    assert ranking.velocity([snap(close, 0), snap(dt.timedelta(0), 100)], now=NOW) == 0.0
    exact = ranking.MIN_VELOCITY_SPAN
    assert ranking.velocity([snap(exact, 0), snap(dt.timedelta(0), 10)], now=NOW) > 0


def test_velocity_never_negative_when_votes_drop() -> None:
    assert ranking.velocity([snap(3 * HOUR, 90), snap(HOUR, 40)], now=NOW) == 0.0


# --- selection ----------------------------------------------------------------------------


def test_without_interests_selection_is_the_top_trending_in_rank_order() -> None:
    cands = [candidate(f"p{r}", r) for r in (3, 1, 2, 4)]
    selection = ranking.select(cands, Interests(max_papers=3))
    assert selection == (("p1", "#1 trending"), ("p2", "#2 trending"), ("p3", "#3 trending"))


def test_max_papers_caps_every_group_combined() -> None:
    cands = [
        candidate("f1", 5, organization="Anthropic"),
        candidate("f2", 6, authors=("Ada Lovelace",)),
        candidate("t1", 7, title="Diffusion for all"),
        candidate("r1", 1),
    ]
    prefs = Interests(
        max_papers=2,
        topics=("diffusion",),
        follow_organizations=("anthropic",),
        follow_authors=("ada lovelace",),
    )
    assert ids(ranking.select(cands, prefs)) == ["f1", "f2"]


def test_followed_then_topic_matches_then_trending_fill() -> None:
    cands = [
        candidate("top", 1),
        candidate("topic", 2, title="Video diffusion at scale"),
        candidate("second", 3),
        candidate("org", 4, organization="Google DeepMind"),
        candidate("author", 5, authors=("Grace Hopper", "Alan Turing")),
    ]
    prefs = Interests(
        max_papers=10,
        topics=("diffusion",),
        follow_organizations=("deepmind",),
        follow_authors=("alan turing",),
    )
    selection = ranking.select(cands, prefs)
    assert ids(selection) == ["org", "author", "topic", "top", "second"]


def test_reasons_say_why_each_paper_was_picked() -> None:
    cands = [
        candidate("org", 4, organization="Google DeepMind"),
        candidate("author", 5, authors=("Alan Turing",)),
        candidate("topic", 2, keywords=("video diffusion",)),
        candidate("top", 1),
    ]
    prefs = Interests(
        max_papers=10,
        topics=("Diffusion",),
        follow_organizations=("google",),
        follow_authors=("ALAN TURING",),
    )
    assert dict(ranking.select(cands, prefs)) == {
        "org": "From Google DeepMind, which you follow",
        "author": "By Alan Turing, whom you follow",
        "topic": "Matches your topic \u201cDiffusion\u201d",
        "top": "#1 trending",
    }


def test_each_group_keeps_edition_rank_order() -> None:
    cands = [
        candidate("t9", 9, title="diffusion nine"),
        candidate("t3", 3, title="diffusion three"),
        candidate("r2", 2),
        candidate("r1", 1),
    ]
    selection = ranking.select(cands, Interests(max_papers=10, topics=("diffusion",)))
    assert ids(selection) == ["t3", "t9", "r1", "r2"]


def test_topics_boost_but_never_filter() -> None:
    cands = [candidate(f"p{r}", r) for r in range(1, 6)]
    selection = ranking.select(cands, Interests(max_papers=5, topics=("robotics",)))
    assert ids(selection) == ["p1", "p2", "p3", "p4", "p5"]


def test_a_paper_appears_once_even_when_it_matches_several_groups() -> None:
    cands = [candidate("p1", 1, title="Diffusion", organization="Anthropic")]
    prefs = Interests(max_papers=5, topics=("diffusion",), follow_organizations=("Anthropic",))
    assert ranking.select(cands, prefs) == (("p1", "From Anthropic, which you follow"),)


@pytest.mark.parametrize(
    ("topic", "text", "matches"),
    [
        ("rl", "A world model for RL agents", True),
        ("rl", "A world model for planning", False),
        ("RL", "rl-based fine-tuning", True),
        ("law", "Scaling laws for transformers", False),
        ("law", "A scaling law for transformers", True),
        ("LLM", "llm agents", True),
        ("reinforcement learning", "Deep Reinforcement  Learning at scale", True),
        ("reinforcement learning", "reinforcement\nlearning from feedback", True),
        ("reinforcement learning", "reinforcement-learning", False),
        ("reinforcement learning", "reinforcement learners", False),
        ("c++", "Fast C++ kernels", True),
        ("c++", "Fast C kernels", False),
        ("3d", "3D reconstruction", True),
        ("3d", "a 3DGS pipeline", False),
    ],
)
def test_topic_matching_is_whole_word_and_case_insensitive(
    topic: str, text: str, matches: bool
) -> None:
    cands = [candidate("top", 1), candidate("x", 2, title=text)]
    selection = ranking.select(cands, Interests(max_papers=2, topics=(topic,)))
    assert (ids(selection)[0] == "x") is matches


@pytest.mark.parametrize("where", ["title", "summary", "keywords"])
def test_topics_match_title_summary_and_keywords(where: str) -> None:
    fields: dict[str, object] = {"title": "Untitled", "summary": "", "keywords": ()}
    fields[where] = ("robotics",) if where == "keywords" else "Advances in Robotics."
    cands = [candidate("top", 1), candidate("x", 2, **fields)]  # type: ignore[arg-type]
    selection = ranking.select(cands, Interests(max_papers=1, topics=("robotics",)))
    assert selection == (("x", "Matches your topic \u201crobotics\u201d"),)


def test_topic_does_not_match_across_two_keywords() -> None:
    cands = [candidate("top", 1), candidate("x", 2, keywords=("deep", "learning"))]
    selection = ranking.select(cands, Interests(max_papers=1, topics=("deep learning",)))
    assert ids(selection) == ["top"]


def test_first_matching_topic_in_the_subscribers_order_is_the_reason() -> None:
    cands = [candidate("x", 1, title="Video diffusion")]
    selection = ranking.select(cands, Interests(max_papers=1, topics=("video", "diffusion")))
    assert selection == (("x", "Matches your topic \u201cvideo\u201d"),)


def test_blank_topics_match_nothing() -> None:
    cands = [candidate("p1", 1), candidate("p2", 2, title="anything")]
    selection = ranking.select(cands, Interests(max_papers=2, topics=("", "   ")))
    assert selection == (("p1", "#1 trending"), ("p2", "#2 trending"))


def test_regex_metacharacters_in_topics_are_literal() -> None:
    cands = [candidate("p1", 1, title="anything at all"), candidate("p2", 2, title="a (b)")]
    selection = ranking.select(cands, Interests(max_papers=1, topics=(".*", "(b)")))
    assert ids(selection) == ["p2"]


def test_followed_author_is_an_exact_name_not_a_substring() -> None:
    cands = [candidate("top", 1), candidate("x", 2, authors=("Yan Chen",))]
    for followed, picked in (("Chen", "top"), ("yan chen", "x")):
        interests = Interests(max_papers=1, follow_authors=(followed,))
        assert ids(ranking.select(cands, interests)) == [picked]


def test_paper_without_organization_matches_no_followed_organization() -> None:
    cands = [candidate("top", 1), candidate("x", 2, organization=None)]
    selection = ranking.select(cands, Interests(max_papers=1, follow_organizations=("Meta",)))
    assert ids(selection) == ["top"]


def test_selection_of_no_candidates_is_empty() -> None:
    assert ranking.select([], Interests(max_papers=5, topics=("x",))) == ()


@pytest.mark.parametrize(
    ("followed", "organization", "matches"),
    [
        ("Google", "Google DeepMind", True),
        ("google deepmind", "Google DeepMind", True),
        ("Meta", "AI at Meta", True),
        ("Meta", "Metaculus", False),
        ("AI", "Shanghai AI Laboratory", True),
        ("AI", "OpenAI", False),
        ("Stanford", "Stanford RegLab", True),
        ("", "Anthropic", False),
        ("  ", "Anthropic", False),
    ],
)
def test_followed_organization_matches_whole_words(
    followed: str, organization: str, matches: bool
) -> None:
    cands = [candidate("top", 1), candidate("x", 2, organization=organization)]
    selection = ranking.select(cands, Interests(max_papers=1, follow_organizations=(followed,)))
    assert (ids(selection) == ["x"]) is matches


# --- interests: what a selection is made from ---------------------------------------------


def test_interests_of_reads_a_subscribers_choices_under_their_own_names() -> None:
    chosen = SimpleNamespace(
        max_papers=4,
        topics=["diffusion", "RL"],
        follow_organizations=["Google"],
        follow_authors=None,  # a row stored before the column had a default
        format="text",  # not part of a selection
    )
    assert Interests.of(chosen) == Interests(
        max_papers=4,
        topics=("diffusion", "RL"),
        follow_organizations=("Google",),
        follow_authors=(),
    )


def test_interests_of_decodes_stored_term_lists_with_the_given_reader() -> None:
    row = SimpleNamespace(
        max_papers=3, topics='["video"]', follow_organizations="[]", follow_authors=None
    )
    interests = Interests.of(row, terms=lambda raw: json.loads(raw) if raw else [])
    assert interests == Interests(max_papers=3, topics=("video",))


def test_equal_interests_are_one_memo_key() -> None:
    a = Interests.of(
        SimpleNamespace(max_papers=3, topics=["x"], follow_organizations=[], follow_authors=[])
    )
    b = Interests(max_papers=3, topics=("x",))
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.max_papers = 4  # type: ignore[misc]
