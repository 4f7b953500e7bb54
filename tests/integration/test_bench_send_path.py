"""`papermail bench --send-in-process`: plan, then send every batch from the bench's process.

Real PostgreSQL, Redis (the bench tests' database) and the sink in its
own process: every planned reader gets one message, the figures are this run's, and
nothing is left behind.
"""

from __future__ import annotations

import pytest

from papermail_dev.bench.run import BenchConfig
from papermail_dev.bench.scratch import existing_databases
from papermail_dev.bench.send_path import run_send_in_process, send_path_report_lines
from tests.support.services import PG_ADMIN_URL

pytestmark = pytest.mark.integration

PREFIX = "papermail_bench_send_path_test"


def test_every_planned_reader_gets_one_message_from_this_process_and_nothing_is_left(
    bench_redis_url: str,
) -> None:
    config = BenchConfig(
        subscribers=250,
        batch_size=50,
        pg_admin_url=PG_ADMIN_URL,
        redis_url=bench_redis_url,
        scratch_prefix=PREFIX,
        feedback_histories=True,
    )
    logged: list[str] = []

    result = run_send_in_process(config, log=logged.append)

    assert (result.planned, result.warmup_messages, result.sent) == (250, 50, 200)
    assert result.duplicates == 0 and result.notes == []
    assert result.distinct_share > 0.9  # the readers' own selections
    assert result.cpu_ms_per_email > 0 and result.postgres_cpu_ms_per_email > 0
    assert result.sink_cpu_ms_per_email > 0 and result.emails_per_second > 0
    assert 2_000 < result.message_bytes_avg < 200_000  # real digests, as the sink got them
    # The whole machine while the batches went: at least this process was busy, and every
    # message woke the sink and PostgreSQL.
    assert result.machine is not None
    assert 0 < result.machine.busy_share <= 1
    assert result.machine.context_switches > result.sent
    report = send_path_report_lines(result)
    assert "200 in" in report and "send path CPU/email" in report
    assert "the machine meanwhile" in report
    assert any("sending 5 batches from this process" in line for line in logged)
    assert existing_databases(PG_ADMIN_URL, PREFIX) == []  # its scratch database is gone
