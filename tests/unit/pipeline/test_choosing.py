"""Choosing for many readers at once is choosing for each alone: planning (batches of
thousands) and previews and test sends (one reader) must never disagree."""

from __future__ import annotations

import random

import numpy as np
import pytest

from papermail.pipeline import batch_scoring, blending, choosing
from papermail.pipeline.picking import Ask, EditionPicker, PoolPaper
from papermail.pipeline.relevance import Paper, ReaderProfile

WORDS = {
    "robot": "robot grasping manipulation gripper arm policy tactile legged",
    "vision": "image segmentation detection convolutional pixels camera depth",
    "language": "language model tokens transformer text instruction tuning",
    "crypto": "encryption protocol zero knowledge proof signature lattice",
}
ORGS = ("Meta AI", "Google DeepMind", "Metaculus", None)
AUTHORS = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Emmy Noether")


def paper(pid: str, field: str, rng: random.Random) -> Paper:
    words = WORDS[field].split()
    text = " ".join(rng.choice(words) for _ in range(12))
    return Paper(
        pid,
        f"{field} {' '.join(rng.sample(words, 3))} {pid}",
        abstract=text,
        authors=tuple(rng.sample(AUTHORS, 2)),
        organization=rng.choice(ORGS),
    )


def pool_and_earlier(seed: int = 3) -> tuple[list[PoolPaper], list[Paper]]:
    rng = random.Random(seed)
    pool = []
    for i in range(36):
        field = list(WORDS)[i % 4]
        arxiv_only = i % 9 == 0
        pool.append(
            PoolPaper(
                paper=paper(f"2611.{i:05d}", field, rng),
                trending=0.0 if arxiv_only else float(rng.randint(0, 60)),  # ties too
                upvotes=rng.randint(0, 90),
                categories=(rng.choice(["cs.RO", "cs.CV", "cs.CL", "cs.CR"]),),
                arxiv_only=arxiv_only,
            )
        )
    earlier = [paper(f"2610.{i:05d}", list(WORDS)[i % 4], rng) for i in range(30)]
    return pool, earlier


def random_asks(pool: list[PoolPaper], earlier: list[Paper], count: int) -> list[Ask]:
    rng = random.Random(11)
    inside = [p.paper for p in pool]
    asks = []
    for _ in range(count):
        marked = rng.sample(earlier + inside, rng.choice([0, 0, 1, 3, 8]))
        cut = rng.randint(0, len(marked))
        reader = ReaderProfile(
            topics=tuple(
                rng.sample(
                    ["robot", "Image segmentation", "zero knowledge", "gpu"], rng.randint(0, 2)
                )
            ),
            follow_organizations=("Meta",) if rng.random() < 0.2 else (),
            follow_authors=(rng.choice(AUTHORS),) if rng.random() < 0.1 else (),
            liked=tuple(marked[:cut]),
            disliked=tuple(marked[cut:]),
            muted_organizations=("Google DeepMind",) if rng.random() < 0.1 else (),
            muted_authors=("Alan Turing",) if rng.random() < 0.1 else (),
            weight=rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]),
        )
        asks.append(
            Ask(
                reader,
                k=rng.choice([0, 1, 3, 5, 10, 40]),
                categories=tuple(rng.sample(["cs.RO", "cs.CV", "cs.CL"], rng.randint(0, 2))),
                seen=frozenset(p.paper_id for p in rng.sample(inside, rng.choice([0, 0, 2]))),
            )
        )
    return asks


@pytest.fixture(scope="module")
def world() -> tuple[list[PoolPaper], list[Ask]]:
    pool, earlier = pool_and_earlier()
    return pool, random_asks(pool, earlier, 300)


def test_a_batch_picks_for_each_reader_what_they_would_get_alone(
    world: tuple[list[PoolPaper], list[Ask]],
) -> None:
    pool, asks = world
    batch = EditionPicker(pool).pick_many(asks)
    alone = [
        EditionPicker(pool).pick(a.reader, k=a.k, categories=a.categories, seen=a.seen)
        for a in asks
    ]
    assert batch == alone
    assert len(set(batch)) > 150  # the readers really differ
    for ask, picks in zip(asks, batch, strict=True):
        assert len(picks) <= ask.k
        marked = {p.paper_id for p in (*ask.reader.liked, *ask.reader.disliked)}
        assert not marked & {pid for pid, _why in picks}
        assert not set(ask.seen) & {pid for pid, _why in picks}


def test_bounded_caches_and_split_batches_choose_the_same(
    world: tuple[list[PoolPaper], list[Ask]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, asks = world
    roomy = EditionPicker(pool).pick_many(asks)
    monkeypatch.setattr(batch_scoring, "GRAM_LIMIT", 4)  # centroid lengths in many small batches
    tight = EditionPicker(pool)
    tight.scorer._rated.limit = 10  # type: ignore[attr-defined]  # starts over, splits batches
    assert tight.pick_many(asks) == roomy
    assert len(tight.scorer._rated.index) <= 10  # type: ignore[attr-defined]


def test_rows_many_readers_share_are_blocked_as_each_readers_own_are(
    world: tuple[list[PoolPaper], list[Ask]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """New-on-arXiv papers outside a reader's categories go in as one array per set of
    categories (Reader.excluded); the picks are those of listing them in every reader's
    own blocked rows."""
    pool, asks = world
    shared = EditionPicker(pool).pick_many(asks)
    own = EditionPicker(pool)
    outside, blocked = own._outside_of, own._blocked
    monkeypatch.setattr(
        own, "_blocked", lambda ask: [*blocked(ask), *outside(ask.categories).tolist()]
    )
    monkeypatch.setattr(own, "_outside_of", lambda categories: choosing.EMPTY_ROWS)

    assert own.pick_many(asks) == shared
    arxiv_only = {p.paper.paper_id for p in pool if p.arxiv_only}
    assert arxiv_only & {pid for picks in shared for pid, _why in picks}  # some got one


def test_rows_scale_as_top_scaled_does_for_each_row() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(size=(50, 17))
    values[3] = 0.0  # all equal: all zero
    values[4, :3] = 5.0  # fewer than k above the median
    ks = rng.integers(0, 25, size=50)
    scaled = choosing.top_scaled_rows(values, ks)
    for row, k, got in zip(values, ks, scaled, strict=True):
        assert np.array_equal(got, blending.top_scaled(row, int(k)))


def test_a_weight_out_of_range_is_refused_for_the_whole_batch(
    world: tuple[list[PoolPaper], list[Ask]],
) -> None:
    pool, asks = world
    bad = Ask(ReaderProfile(weight=1.5), k=3)
    with pytest.raises(ValueError, match="weight must be within"):
        EditionPicker(pool).pick_many([*asks[:5], bad])
