"""`papermail bench`, killed mid-run, leaves nothing behind; beside live workers it won't start.

Real PostgreSQL, Redis (db 9: the other integration tests own 10-14) and Celery workers.
A tiny run (a rate-limited delivery, so it is still sending when killed) in a child
process gets SIGTERM, as `timeout` or a CI runner sends it: its workers (whole process
groups), its sink, its scratch database and its Redis keys must all be gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis as redis_lib

from papermail_dev.bench.celery_workers import (
    answering_workers,
    group_members,
    start_worker,
    stop_workers,
)
from papermail_dev.bench.run import BenchConfig, EarlierRunStillRunning, run_bench
from papermail_dev.bench.scratch import scratch_database
from tests.support.services import (
    PG_ADMIN_URL,
    ROOT,
)

pytestmark = pytest.mark.integration

PREFIX = "papermail_bench_cleanup_test"  # this file's scratch databases


@pytest.fixture
def redis_url(bench_redis_url: str) -> str:
    return bench_redis_url


def scratch_databases() -> list[str]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{PREFIX}%",)
        ).fetchall()
    return [row[0] for row in rows]


def bench_workers(pid: int) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(pid).children(recursive=True) if "celery" in " ".join(p.cmdline())
    ]


def still_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from papermail_dev.bench.run import BenchConfig, run_bench

    config = BenchConfig(
        subscribers=600, workers=1, concurrency=2, batch_size=20,
        redis_url=sys.argv[1], pg_admin_url=sys.argv[2], log_dir=Path(sys.argv[3]),
        send_rate_per_second=40, scratch_prefix=sys.argv[4], timeout_seconds=120,
    )
    run_bench(config, log=lambda line: print(line, flush=True))
    """
)


def test_a_sigtermed_bench_stops_its_workers_and_sink_and_drops_its_database(
    redis_url: str, tmp_path: Path
) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", RUN, redis_url, PG_ADMIN_URL, str(tmp_path), PREFIX],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert bench.stdout is not None
        for line in bench.stdout:  # until it delivers (blocks on each line)
            lines.append(line)
            if "worker(s) up" in line:
                break
        else:
            pytest.fail("the bench ended before its workers were up:\n" + "".join(lines))
        time.sleep(2)  # mid-delivery: 600 messages at 40/s take 15 s
        workers = bench_workers(bench.pid)
        groups = {os.getpgid(p.pid) for p in workers}
        processes = [p.pid for p in psutil.Process(bench.pid).children(recursive=True)]
        assert workers and scratch_databases(), "nothing to clean up yet"
        assert redis_lib.Redis.from_url(redis_url).dbsize() > 0

        bench.send_signal(signal.SIGTERM)
        rest, _ = bench.communicate(timeout=45)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    output = "".join(lines) + rest

    assert bench.returncode == 128 + signal.SIGTERM, output
    assert "interrupted (terminated by SIGTERM)" in output, output
    assert "could not" not in output, output
    assert [pgid for pgid in groups if group_members(pgid)] == [], output
    assert [pid for pid in processes if still_running(pid)] == [], output  # the sink too
    assert scratch_databases() == []
    assert redis_lib.Redis.from_url(redis_url).dbsize() == 0


def test_a_bench_refuses_to_start_while_workers_answer_on_its_broker(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    client.set("sentinel", "1")
    with scratch_database(PG_ADMIN_URL, prefix=PREFIX) as db_url:
        env = {
            "PAPERMAIL_DATABASE_URL": db_url,
            "PAPERMAIL_REDIS_URL": redis_url,
            "PAPERMAIL_SECRET_KEY": "bench-cleanup-secret-0123456789abcdefghij",
            "PAPERMAIL_LOG_LEVEL": "WARNING",
        }
        leftover = start_worker(env, name="bench0@%h", concurrency=1, log_path=tmp_path / "w.log")
        try:
            deadline = time.monotonic() + 30
            while not answering_workers(redis_url):  # until the worker is up
                assert time.monotonic() < deadline, "the worker never answered"
                time.sleep(0.5)
            config = BenchConfig(subscribers=10, redis_url=redis_url, scratch_prefix=PREFIX)
            with pytest.raises(EarlierRunStillRunning) as refused:
                run_bench(config, log=lambda line: None)
            refusal = refused.value.message
        finally:
            stop_workers([leftover], grace=10)

    assert f"(pid {leftover.pid})" in refusal
    assert f"kill -TERM {leftover.pid}" in refusal and "pkill -f" in refusal
    assert client.get("sentinel") == b"1"  # refused before flushing anything
    assert scratch_databases() == []  # nor created anything
    assert group_members(leftover.pid) == []
    client.close()
