"""Learned relevance: cold start, feedback, mutes, the blend, why-lines (generated papers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from papermail.pipeline import blending, relevance
from papermail.pipeline.relevance import Paper, Pick, Pool, ReaderProfile, Scorer
from papermail.pipeline.tfidf import TfidfScorer

# Four fields with words of their own, plus words every paper uses.
FIELDS = {
    "robotics": "robot robotics grasping gripper manipulation locomotion legged teleoperation "
    "kinematics actuator",
    "vision": "image segmentation pixel detection camera convolutional video depth optical "
    "occlusion",
    "language": "language translation tokens corpus dialogue parsing summarization prompt "
    "multilingual syntax",
    "security": "encryption cipher attack privacy protocol malware intrusion adversary "
    "signature leakage",
}
SHARED = "method results propose experiments performance approach evaluate baseline data model"
METHODS = ("svm", "profile")


def field_paper(field: str, number: int, rng: np.random.Generator, **extra: object) -> Paper:
    own = FIELDS[field].split()
    shared = SHARED.split()
    title_words = rng.choice(own, 3, replace=False)
    words = list(rng.choice(own, 18)) + list(rng.choice(shared, 12))
    rng.shuffle(words)
    return Paper(
        paper_id=f"{field}-{number}",
        title=f"On {title_words[0]} and {title_words[1]} for {title_words[2]} ({number})",
        abstract=" ".join(words) + ".",
        **extra,  # type: ignore[arg-type]
    )


def make_pool(per_field: int = 15, *, seed: int = 1, fields: tuple[str, ...] = ()) -> list[Paper]:
    rng = np.random.default_rng(seed)
    return [
        field_paper(field, seed * 1000 + i, rng)
        for field in fields or FIELDS
        for i in range(per_field)
    ]


def fitted(papers: list[Paper], method: str = "svm") -> tuple[Pool, TfidfScorer]:
    scorer = TfidfScorer(method=method)  # type: ignore[arg-type]
    scorer.fit(papers)
    return Pool(papers), scorer


def field_of(pick: Pick) -> str:
    return pick.paper_id.split("-")[0]


def flat(pool: Pool) -> np.ndarray:
    return np.zeros(len(pool))


def pick_for(
    pool: Pool,
    scorer: Scorer,
    reader: ReaderProfile,
    trending: np.ndarray | None = None,
    k: int = 10,
) -> list[Pick]:
    trending = flat(pool) if trending is None else trending
    return relevance.choose(pool, scorer.score(reader), trending, reader, k=k)


def ranks_of(field: str, pool: Pool, scorer: Scorer, reader: ReaderProfile) -> float:
    """Mean position of a field's papers in the reader's full relevance order (0 = best)."""
    order = np.argsort(-scorer.score(reader).scores, kind="stable")
    position = {pool.ids[row]: i for i, row in enumerate(order)}
    return float(np.mean([p for pid, p in position.items() if pid.startswith(field)]))


# --- cold start ---------------------------------------------------------------------------


def test_the_default_scorer_is_a_scorer() -> None:
    scorer: Scorer = TfidfScorer()
    assert isinstance(scorer, TfidfScorer)


@pytest.mark.parametrize("method", METHODS)
def test_cold_start_ranks_topic_matches_first(method: str) -> None:
    pool, scorer = fitted(make_pool(), method)
    reader = ReaderProfile(topics=("robotics", "grasping"))

    picks = pick_for(pool, scorer, reader)

    assert [field_of(p) for p in picks] == ["robotics"] * 10
    assert all(p.evidence == "topic" for p in picks)


def test_cold_start_finds_papers_through_the_topics_neighbours() -> None:
    # At most three papers say "robotics"; expansion brings in those that say "gripper".
    papers: list[Paper] = []
    for paper in make_pool(per_field=30):
        if paper.paper_id.startswith("robotics") and len(papers) >= 3:
            paper = dataclasses.replace(
                paper,
                title=paper.title.replace("robotics", "robot"),
                abstract=paper.abstract.replace("robotics", "robot"),
            )
        papers.append(paper)
    pool, scorer = fitted(papers)
    reader = ReaderProfile(topics=("robotics",))

    picks = pick_for(pool, scorer, reader, k=25)

    assert [field_of(p) for p in picks] == ["robotics"] * 25
    literal = sum("robotics" in f"{p.title} {p.abstract}".split() for p in papers)
    reasons = [p.reason for p in picks]
    assert 0 < literal <= 3
    assert reasons.count("Matches your topic \u201crobotics\u201d") == literal
    assert reasons.count("Related to your topic \u201crobotics\u201d") == 25 - literal


def test_cold_start_with_nothing_stated_is_trending() -> None:
    pool, scorer = fitted(make_pool())
    trending = np.arange(len(pool), dtype=float)  # the last paper is the most trending

    picks = pick_for(pool, scorer, ReaderProfile(), trending, k=3)

    assert [p.paper_id for p in picks] == [pool.ids[-1], pool.ids[-2], pool.ids[-3]]
    assert [p.reason for p in picks] == ["#1 trending", "#2 trending", "#3 trending"]


# --- feedback -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_more_like_this_lifts_similar_papers_next_time(method: str) -> None:
    yesterday = make_pool(seed=7, fields=("vision",))
    pool, scorer = fitted(make_pool(), method)
    before = ReaderProfile(topics=("language",))
    after = ReaderProfile(topics=("language",), liked=(yesterday[0], yesterday[1]))

    assert ranks_of("vision", pool, scorer, after) < ranks_of("vision", pool, scorer, before) - 10
    picks = pick_for(pool, scorer, after, k=20)
    assert {field_of(p) for p in picks} == {"language", "vision"}
    liked = [p for p in picks if p.evidence == "liked"]
    assert liked and all(p.paper_id.startswith("vision") for p in liked)


@pytest.mark.parametrize("method", METHODS)
def test_less_like_this_pushes_similar_papers_down(method: str) -> None:
    yesterday = make_pool(seed=7, fields=("security",))
    pool, scorer = fitted(make_pool(), method)
    # "attack" and "signature" are security words; the reader typed a topic that is not.
    before = ReaderProfile(topics=("segmentation",), liked=(make_pool(seed=8)[0],))
    after = ReaderProfile(
        topics=("segmentation",), liked=before.liked, disliked=(yesterday[0], yesterday[1])
    )

    assert ranks_of("security", pool, scorer, after) > ranks_of("security", pool, scorer, before)


def test_a_disliked_paper_is_never_shown_again() -> None:
    papers = make_pool()
    pool, scorer = fitted(papers)
    robotics = [p for p in papers if p.paper_id.startswith("robotics")]
    reader = ReaderProfile(topics=("robotics",), disliked=(robotics[0],))

    picks = pick_for(pool, scorer, reader, k=len(papers))

    assert robotics[0].paper_id not in {p.paper_id for p in picks}


@pytest.mark.parametrize("method", METHODS)
def test_feedback_alone_is_enough(method: str) -> None:
    earlier = make_pool(seed=7)
    pool, scorer = fitted(make_pool(), method)
    reader = ReaderProfile(
        liked=tuple(p for p in earlier if p.paper_id.startswith("language"))[:3],
        disliked=tuple(p for p in earlier if p.paper_id.startswith("vision"))[:3],
    )

    picks = pick_for(pool, scorer, reader)

    assert [field_of(p) for p in picks] == ["language"] * 10


# --- follows and mutes --------------------------------------------------------------------


def test_muted_authors_and_organisations_are_never_picked() -> None:
    rng = np.random.default_rng(3)
    papers = make_pool()
    papers[0] = field_paper("robotics", 900, rng, authors=("Mallory Quinn", "Ada Byron"))
    papers[1] = field_paper("robotics", 901, rng, organization="Noisy Robots Lab")
    papers[2] = field_paper("robotics", 902, rng, organization="Noisy Robots Lab Berlin")
    pool, scorer = fitted(papers)
    reader = ReaderProfile(
        topics=("robotics",),
        muted_authors=("mallory  QUINN",),
        muted_organizations=("noisy robots lab",),
    )
    # The muted papers are the most trending and the most relevant: still never shown.
    trending = np.zeros(len(pool))
    trending[:2] = 100.0
    for weight in (0.0, 0.5, 1.0):
        profile = dataclasses.replace(reader, weight=weight)
        shown = {p.paper_id for p in pick_for(pool, scorer, profile, trending, k=len(papers))}
        assert papers[0].paper_id not in shown
        assert papers[1].paper_id not in shown
        assert papers[2].paper_id in shown  # a mute names one organisation exactly
        assert len(shown) == len(papers) - 2


def test_followed_organisations_and_authors_come_first_and_say_so() -> None:
    rng = np.random.default_rng(4)
    papers = make_pool()
    papers[-1] = field_paper("security", 950, rng, organization="Cipher Works")
    papers[-2] = field_paper("security", 951, rng, authors=("Grace Hopper",))
    pool, scorer = fitted(papers)
    reader = ReaderProfile(
        topics=("robotics",),
        follow_organizations=("cipher works",),
        follow_authors=("grace hopper",),
    )

    # The robotics papers are the most relevant and the most trending: follows still lead.
    trending = np.array([10.0 if pid.startswith("robotics") else 0.0 for pid in pool.ids])

    picks = pick_for(pool, scorer, reader, trending, k=5)

    assert {p.paper_id for p in picks[:2]} == {papers[-1].paper_id, papers[-2].paper_id}
    assert {p.reason for p in picks[:2]} == {
        "From Cipher Works, which you follow",
        "By Grace Hopper, whom you follow",
    }
    assert all(field_of(p) == "robotics" for p in picks[2:])


def test_typed_organisations_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(4)
    papers = make_pool(per_field=2)
    papers[0] = field_paper("security", 950, rng, organization="Cipher Works")
    pool = Pool(papers)
    monkeypatch.setattr(relevance, "ORG_TERMS_REMEMBERED", 3)
    typed = [f"lab {n}" for n in range(10)] + ["cipher works", "CIPHER  works", "works"]

    for term in typed * 2:
        expected = {0: "Cipher Works"} if "works" in term.casefold() else {}
        assert pool.by_organizations([term]) == expected
        assert len(pool._org_terms) <= 3


# --- the blend ----------------------------------------------------------------------------


def test_the_blend_at_zero_is_pure_trending_and_at_one_pure_relevance() -> None:
    rng = np.random.default_rng(5)
    trending = rng.random(40) * 50
    scores = rng.normal(size=40)

    assert np.allclose(blending.blend(trending, scores, 0.0), blending.scaled(trending))
    assert np.allclose(blending.blend(trending, scores, 1.0), blending.top_scaled(scores, 10))
    with pytest.raises(ValueError):
        blending.blend(trending, scores, 1.5)


def test_choose_at_zero_is_the_trending_list_and_at_one_the_relevance_order() -> None:
    pool, scorer = fitted(make_pool())
    trending = np.random.default_rng(6).random(len(pool)) * 100
    reader = ReaderProfile(topics=("robotics", "translation"))
    scores = scorer.score(reader).scores

    at_zero = pick_for(pool, scorer, ReaderProfile(topics=reader.topics, weight=0.0), trending)
    at_one = pick_for(pool, scorer, ReaderProfile(topics=reader.topics, weight=1.0), trending)

    assert [p.paper_id for p in at_zero] == [pool.ids[i] for i in np.argsort(-trending)[:10]]
    assert all(p.evidence == "trending" for p in at_zero)
    assert [p.paper_id for p in at_one] == [
        pool.ids[i] for i in np.argsort(-scores, kind="stable")[:10]
    ]


def test_halfway_a_paper_that_stands_out_in_trending_joins_the_readers_own() -> None:
    pool, scorer = fitted(make_pool())
    trending = np.ones(len(pool))
    star = pool.ids.index("security-1003")
    trending[star] = 500.0  # far ahead of every other paper today
    reader = ReaderProfile(topics=("robotics",))

    picks = pick_for(pool, scorer, reader, trending)

    assert picks[0].paper_id == "security-1003"
    assert picks[0].reason == "#1 trending"
    assert [field_of(p) for p in picks[1:]] == ["robotics"] * 9


def test_normalisations() -> None:
    assert blending.scaled(np.array([2.0, 4.0, 6.0])).tolist() == [0.0, 0.5, 1.0]
    assert blending.scaled(np.array([3.0, 3.0])).tolist() == [0.0, 0.0]
    # Median -> 0, the k-th best -> 1, clipped either side.
    top = blending.top_scaled(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 9.0]), 2)
    assert top.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.333333, 1.0, 1.0], abs=1e-5)
    assert blending.top_scaled(np.zeros(5), 2).tolist() == [0.0] * 5


# --- evidence, determinism, edges ---------------------------------------------------------


def test_evidence_names_the_liked_paper_and_the_topic() -> None:
    yesterday = make_pool(seed=7, fields=("vision",))
    pool, scorer = fitted(make_pool())
    reader = ReaderProfile(topics=("translation",), liked=(yesterday[0],))

    picks = pick_for(pool, scorer, reader, k=30)
    reasons = {p.reason for p in picks}

    assert f"Similar to \u201c{yesterday[0].title}\u201d, which you liked" in reasons
    assert "Matches your topic \u201ctranslation\u201d" in reasons
    for p in picks:
        if p.evidence == "liked":
            assert field_of(p) == "vision"
        if p.evidence == "topic":
            assert field_of(p) == "language"


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(method: str) -> None:
    papers = make_pool()
    earlier = make_pool(seed=7)
    reader = ReaderProfile(
        topics=("robotics",), liked=tuple(earlier[20:23]), disliked=tuple(earlier[40:42])
    )
    trending = np.linspace(0, 5, len(papers))

    runs = []
    for _ in range(2):
        pool, scorer = fitted(list(papers), method)
        runs.append(
            [(p.paper_id, p.score, p.reason) for p in pick_for(pool, scorer, reader, trending)]
        )

    assert runs[0] == runs[1]


def test_misaligned_inputs_and_bad_weights_are_refused() -> None:
    pool, scorer = fitted(make_pool())
    reader = ReaderProfile(topics=("robotics",))
    with pytest.raises(ValueError, match="same order"):
        relevance.choose(pool, scorer.score(reader), np.zeros(3), reader)
    with pytest.raises(ValueError, match="weight"):
        pick_for(pool, scorer, ReaderProfile(weight=-0.1))


def test_an_empty_or_wordless_pool_scores_nothing() -> None:
    for papers in ([], [Paper("x", "the of and"), Paper("y", "a an")]):
        pool, scorer = fitted(papers)
        reader = ReaderProfile(topics=("robotics",), liked=(Paper("z", "robot gripper"),))
        assert scorer.score(reader).scores.shape == (len(papers),)
        assert len(pick_for(pool, scorer, reader)) == len(papers)


def test_a_topic_the_pool_never_mentions_changes_nothing() -> None:
    pool, scorer = fitted(make_pool())
    scores = scorer.score(ReaderProfile(topics=("astrophysics",))).scores
    assert not scores.any()


@pytest.mark.parametrize("with_pool_papers", [False, True])
def test_a_profile_from_cached_dot_products_is_the_one_sparse_algebra_gives(
    with_pool_papers: bool,
) -> None:
    # The profile's centroid lengths come from a Gram matrix of the marked papers and
    # their similarity rows from a cache; the reference is the formula on plain vectors.
    pool = make_pool(per_field=8, seed=3)
    earlier = make_pool(per_field=4, seed=9)  # marked in earlier emails: outside the pool
    liked = tuple(earlier[:5]) + (tuple(pool[:2]) if with_pool_papers else ())
    disliked = tuple(earlier[12:15])
    reader = ReaderProfile(topics=("robot",), liked=liked, disliked=disliked)
    _pool, scorer = fitted(pool, "profile")
    scorer.score(reader)  # the marked papers are cached...
    cached = scorer.score(reader).scores  # ...and read back here

    vectors = scorer.encode(pool)

    def centroid_cosines(papers: tuple[Paper, ...]) -> np.ndarray:
        total = np.asarray(scorer.encode(papers).sum(axis=0)).ravel()
        return np.asarray(vectors @ total).ravel() / np.linalg.norm(total)

    a, b, c = relevance.ROCCHIO
    topic = scorer.score(ReaderProfile(topics=("robot",))).scores
    expected = a * topic + b * centroid_cosines(liked) - c * centroid_cosines(disliked)
    assert np.allclose(cached, expected)
