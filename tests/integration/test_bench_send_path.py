"""`papermail bench --send-in-process`: plan, then send every batch from the bench's process.

Real PostgreSQL, Redis (db 9, as the other bench tests: never at once) and the sink in its
own process: every planned reader gets one message, the figures are this run's, and
nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from papermail_dev.bench.run import BenchConfig
from papermail_dev.bench.scratch import existing_databases
from papermail_dev.bench.send_path import run_send_in_process, send_path_report_lines
from tests.conftest import service_missing
from tests.integration.conftest import flushed_redis
from tests.support.services import PG_ADMIN_URL, pg_available

pytestmark = pytest.mark.integration

REDIS_DB = 9
PREFIX = "papermail_bench_send_path_test"


@pytest.fixture
def redis_url() -> Iterator[str]:
    if not pg_available():
        service_missing("PostgreSQL at 127.0.0.1:5432")
    yield from flushed_redis(REDIS_DB)


def test_every_planned_reader_gets_one_message_from_this_process_and_nothing_is_left(
    redis_url: str,
) -> None:
    config = BenchConfig(
        subscribers=250,
        batch_size=50,
        pg_admin_url=PG_ADMIN_URL,
        redis_url=redis_url,
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
    report = send_path_report_lines(result)
    assert "200 in" in report and "send path CPU/email" in report
    assert any("sending 5 batches from this process" in line for line in logged)
    assert existing_databases(PG_ADMIN_URL, PREFIX) == []  # its scratch database is gone
