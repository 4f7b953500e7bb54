"""Each reader's picks: feedback moves them, the blend setting moves them, nothing repeats."""

from __future__ import annotations

import pytest

from papermail.pipeline.picking import EditionPicker, PoolPaper
from papermail.pipeline.relevance import Paper, ReaderProfile

TREND = {"language": 40, "vision": 30, "robot": 20, "crypto": 5}  # language trends most
FIELDS = {
    "robot": "robot grasping manipulation gripper arm policy tactile",
    "vision": "image segmentation detection convolutional pixels camera",
    "language": "language model tokens transformer text instruction tuning",
    "crypto": "encryption protocol zero knowledge proof signature lattice",
}


def pool(per_field: int = 6) -> list[PoolPaper]:
    papers = []
    for f, (field, words) in enumerate(FIELDS.items()):
        for i in range(per_field):
            pid = f"2611.{f}{i:04d}"
            papers.append(
                PoolPaper(
                    paper=Paper(pid, f"{field.title()} study {i}: {words}", abstract=words),
                    # Language papers trend most, crypto least.
                    trending=float(
                        {"language": 40, "vision": 30, "robot": 20, "crypto": 5}[field] - i
                    ),
                    upvotes=100 - 10 * f - i,
                )
            )
    return papers


def ids(picks: tuple[tuple[str, str], ...]) -> list[str]:
    return [pid for pid, _why in picks]


def field_of(pid: str) -> str:
    return list(FIELDS)[int(pid[5])]


@pytest.fixture
def picker() -> EditionPicker:
    return EditionPicker(pool())


def test_a_new_reader_with_no_topics_gets_trending(picker: EditionPicker) -> None:
    picks = picker.pick(ReaderProfile(), k=3)
    assert ids(picks) == ["2611.20000", "2611.20001", "2611.20002"]
    assert [why for _pid, why in picks][0] == "#1 trending · 80 upvotes"


def test_liking_a_paper_moves_the_next_digest_towards_it(picker: EditionPicker) -> None:
    cold = picker.pick(ReaderProfile(), k=4)
    assert not any(field_of(pid) == "crypto" for pid in ids(cold))
    liked = picker.papers[-1].paper  # a crypto paper
    warm = picker.pick(ReaderProfile(liked=(liked,)), k=4)
    crypto = [pid for pid in ids(warm) if field_of(pid) == "crypto"]
    assert crypto, warm
    reasons = dict(warm)
    assert any("which you liked" in reasons[pid] for pid in crypto)


def test_less_like_this_removes_the_paper_and_its_kind(picker: EditionPicker) -> None:
    first = ids(picker.pick(ReaderProfile(weight=1.0, topics=("language model",)), k=4))
    disliked = next(p.paper for p in picker.papers if p.paper.paper_id == first[0])
    after = ids(
        picker.pick(
            ReaderProfile(weight=1.0, topics=("language model",), disliked=(disliked,)), k=4
        )
    )
    assert first[0] not in after


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_the_blend_setting_slides_from_trending_to_for_me(
    picker: EditionPicker, weight: float
) -> None:
    picks = ids(picker.pick(ReaderProfile(topics=("encryption",), weight=weight), k=4))
    crypto = sum(field_of(pid) == "crypto" for pid in picks)
    assert crypto == {0.0: 0, 0.5: 4, 1.0: 4}[weight]


def test_papers_already_sent_never_come_again(picker: EditionPicker) -> None:
    first = ids(picker.pick(ReaderProfile(), k=3))
    again = ids(picker.pick(ReaderProfile(), k=3, seen=first))
    assert not set(first) & set(again) and len(again) == 3


def test_new_arxiv_papers_come_only_in_a_followed_category() -> None:
    papers = pool(2) + [
        PoolPaper(
            paper=Paper("2611.90001", "Robot manipulation from tactile sensing", abstract="robot"),
            trending=0.0,
            categories=("cs.RO",),
            arxiv_only=True,
        )
    ]
    picker = EditionPicker(papers)
    everyone = ids(picker.pick(ReaderProfile(topics=("robot",), weight=1.0), k=9))
    assert "2611.90001" not in everyone
    follower = dict(
        picker.pick(ReaderProfile(topics=("robot",), weight=1.0), k=9, categories=("cs.RO",))
    )
    assert "2611.90001" in follower


def test_an_empty_pool_picks_nothing() -> None:
    assert EditionPicker([]).pick(ReaderProfile(topics=("x",)), k=5) == ()


def test_a_paper_the_reader_marked_is_never_picked_again(picker: EditionPicker) -> None:
    liked = picker.papers[0].paper
    picks = ids(picker.pick(ReaderProfile(liked=(liked,), weight=1.0), k=10))
    assert liked.paper_id not in picks and len(picks) == 10
