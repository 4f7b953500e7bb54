"""--arxiv-pool on real PostgreSQL: the corpus's papers join the edition as new on arXiv,
readers follow arXiv categories, and planning gives those readers papers of their fields
(and nobody else any paper that is only new on arXiv)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from papermail.models import Edition, Paper, Subscriber
from papermail.wiring import Wiring
from papermail_dev.bench.arxiv_pool import ArxivPool
from papermail_dev.bench.scratch import bench_settings, prepare_run, scratch_database
from tests.support.bench import plan_everyone, planned_picks
from tests.support.corpus import write_corpus
from tests.support.services import PG_ADMIN_URL

pytestmark = pytest.mark.integration

PREFIX = "papermail_bench_arxiv_test"


def test_an_arxiv_pool_reaches_the_readers_who_follow_its_fields(
    bench_redis_url: str, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "small.jsonl")
    with scratch_database(PG_ADMIN_URL, prefix=PREFIX) as db_url:
        settings = bench_settings(db_url, bench_redis_url, None, 50)
        prepared = prepare_run(settings, subscribers=200, seed=1, arxiv_pool=ArxivPool(corpus, 120))
        w = Wiring(settings)
        try:
            plan_everyone(w, prepared.edition_id)
            with w.sessions() as session:
                edition = session.get(Edition, prepared.edition_id)
                assert edition is not None
                pool = {item.paper_id for item in edition.items}
                arxiv = {
                    p.id: tuple(p.categories)
                    for p in session.scalars(select(Paper).where(Paper.source == "arxiv"))
                }
                follows = {
                    s.id: set(s.arxiv_categories) for s in session.scalars(select(Subscriber))
                }
                picks = {r: [paper for paper, _ in ps] for r, ps in planned_picks(session).items()}
        finally:
            w.engine.dispose()
            w.redis.close()

    assert prepared.arxiv_papers == 120
    assert len(arxiv) == 120 and set(arxiv) <= pool
    assert prepared.pool == len(pool) == 40 + 120  # the sample's day and the arXiv papers
    assert {len(f) for f in follows.values()} == {0, 1, 2}
    assert len(picks) == 200
    given = 0
    for reader, papers in picks.items():
        for paper in papers:
            if paper in arxiv:  # new on arXiv: only in a field the reader follows
                assert follows[reader] & set(arxiv[paper]), (reader, paper, follows[reader])
                given += 1
    assert given > 0
