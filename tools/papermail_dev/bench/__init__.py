"""`papermail bench`: deliver one edition to N synthetic subscribers on the real topology.

PostgreSQL, Redis, Celery worker processes and a loopback SMTP sink, all on this
machine. Planning runs as the Celery task does in production. In the same run,
against the same sink, a raw baseline sends pre-built bytes over reused smtplib
connections: the ratio says how much the pipeline costs over bare SMTP.

A run flushes its Redis database and creates a scratch PostgreSQL database (it says so
first), refuses to start while workers of an earlier run still answer on its broker, and
leaves nothing running or behind however it ends (SIGKILL aside).

    run.py             BenchConfig, BenchResult, run_bench, report_lines; --plan-only:
                       PlanResult, run_plan_only (planning in-process, batches counted)
    send_path.py       --send-in-process: SendPathResult, run_send_in_process (plan, then
                       every batch sent from the bench's own process: the send path's cost)
    lifecycle.py       what a run started and created, gone on every exit (SIGTERM too)
    scratch.py         the scratch database, its edition, subscribers and their feedback
    arxiv_pool.py      --arxiv-pool: a corpus's papers new on arXiv in the edition's pool
    typed_topics.py    --typed-topics: readers who type thousands of distinct topics
    celery_workers.py  worker processes, started as in production
    sink_process.py    the SMTP sink in a process of its own
    sampling.py        CPU/RSS sampling and counts in the database
    baseline.py        the raw SMTP baseline
"""

from __future__ import annotations

from papermail_dev.bench.arxiv_pool import ArxivPool, ArxivPoolError
from papermail_dev.bench.run import (
    BenchConfig,
    BenchResult,
    PlanResult,
    report_lines,
    run_bench,
    run_plan_only,
)
from papermail_dev.bench.scratch import (
    prepare,
    scratch_database,
    seed_feedback,
    seed_subscribers,
)
from papermail_dev.bench.send_path import (
    SendPathResult,
    run_send_in_process,
    send_path_report_lines,
)
from papermail_dev.bench.typed_topics import TypedTopicsError

__all__ = [
    "ArxivPool",
    "ArxivPoolError",
    "BenchConfig",
    "BenchResult",
    "PlanResult",
    "SendPathResult",
    "TypedTopicsError",
    "prepare",
    "report_lines",
    "run_bench",
    "run_plan_only",
    "run_send_in_process",
    "scratch_database",
    "seed_feedback",
    "seed_subscribers",
    "send_path_report_lines",
]
