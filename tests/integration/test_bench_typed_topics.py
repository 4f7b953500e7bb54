"""--typed-topics on real PostgreSQL: readers type hundreds of distinct topics between them,
and planning answers each reader's own with their own why-lines."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from papermail.models import Subscriber
from papermail.wiring import Wiring
from papermail_dev.bench.scratch import bench_settings, prepare_run, scratch_database
from tests.support.bench import plan_everyone, planned_picks
from tests.support.services import PG_ADMIN_URL

pytestmark = pytest.mark.integration

PREFIX = "papermail_bench_topics_test"
TOPIC_LINE = re.compile(r"(?:Matches|Related to) your topic “(.+)”")


def test_typed_topics_are_each_readers_own_and_planning_answers_them(
    bench_redis_url: str,
) -> None:
    with scratch_database(PG_ADMIN_URL, prefix=PREFIX) as db_url:
        settings = bench_settings(db_url, bench_redis_url, None, 50)
        prepared = prepare_run(settings, subscribers=300, seed=1, typed_topics=400)
        w = Wiring(settings)
        try:
            plan_everyone(w, prepared.edition_id)
            with w.sessions() as session:
                typed = {s.id: list(s.topics) for s in session.scalars(select(Subscriber))}
                lines = {
                    r: [why for _, why in picks] for r, picks in planned_picks(session).items()
                }
        finally:
            w.engine.dispose()
            w.redis.close()

    assert prepared.typed_topics == 400
    stated = {t for topics in typed.values() for t in topics}
    assert 150 < len(stated) <= 400  # 0-2 a reader, of 400: most of them, none other
    assert {len(t) for t in typed.values()} == {0, 1, 2}
    assert len(lines) == 300
    answered = 0
    for reader, why in lines.items():
        for line in why:
            if match := TOPIC_LINE.search(line):  # a topic's why-line names one of theirs
                assert match.group(1) in typed[reader], (reader, line, typed[reader])
                answered += 1
    assert answered > 100
