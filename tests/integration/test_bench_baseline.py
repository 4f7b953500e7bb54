"""The bench's raw SMTP baseline sends the run's own mix of digests, not one of them.

Digests range from a few KB (five papers, plain text) to ~80 KB (fifteen, HTML), and bare
SMTP sends small ones much faster: a baseline of one digest measures whichever reader
came first. Real PostgreSQL and Redis (the bench tests' database).
"""

from __future__ import annotations

import email

import pytest

from papermail.wiring import Wiring
from papermail_dev.bench.baseline import raw_baseline, sample_messages
from papermail_dev.bench.scratch import bench_settings, prepare_run, scratch_database
from papermail_dev.bench.sink_process import SinkProcess
from tests.support.bench import plan_everyone
from tests.support.services import PG_ADMIN_URL

pytestmark = pytest.mark.integration

PREFIX = "papermail_bench_baseline_test"


def test_the_baseline_cycles_through_real_digests_spread_over_the_edition(
    bench_redis_url: str,
) -> None:
    with scratch_database(PG_ADMIN_URL, prefix=PREFIX) as db_url:
        settings = bench_settings(db_url, bench_redis_url, None, 20)
        prepared = prepare_run(settings, subscribers=60, seed=0, feedback_histories=True)
        w = Wiring(settings)
        try:
            plan_everyone(w, prepared.edition_id)
        finally:
            w.engine.dispose()
            w.redis.close()

        payloads = sample_messages(settings, count=12)

    assert len(payloads) == 12
    messages = [email.message_from_bytes(p) for p in payloads]
    # Every reader's own links, as the send path signs them.
    assert len({m["List-Unsubscribe"] for m in messages}) == 12
    # Both formats and the spread of sizes the run sends, not one digest twelve times.
    kinds = {m.get_content_type() for m in messages}
    assert kinds == {"multipart/alternative", "text/plain"}, kinds
    sizes = sorted(map(len, payloads))
    assert sizes[-1] > 3 * sizes[0], sizes

    with SinkProcess() as sink:
        baseline = raw_baseline(sink, payloads=payloads, connections=2, messages=24)
        accepted, recipients, duplicates, accepted_bytes = sink.stats()

    assert baseline.emails_per_second > 0
    assert baseline.messages == 24
    # The whole machine during the timed window: the senders and the sink kept it busy.
    assert 0 < baseline.machine.busy_share <= 1
    assert 0 <= baseline.machine.kernel_share <= baseline.machine.busy_share
    assert baseline.machine.context_switches > 0
    assert (accepted, recipients, duplicates) == (24, 12, 12)  # two connections, 12 each
    # Each connection went once through all twelve, from its own place in them.
    assert accepted_bytes == 2 * sum(sizes)


def test_no_deliveries_is_a_clear_error(bench_redis_url: str) -> None:
    with scratch_database(PG_ADMIN_URL, prefix=PREFIX) as db_url:
        settings = bench_settings(db_url, bench_redis_url, None, 20)
        prepare_run(settings, subscribers=5, seed=0)  # nothing planned yet
        with pytest.raises(LookupError, match="no deliveries"):
            sample_messages(settings)
