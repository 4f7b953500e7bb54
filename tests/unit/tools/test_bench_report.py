"""What `papermail bench` prints and writes: both modes, with and without feedback histories."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

import papermail_dev.bench as bench_package
from papermail.cli.main import main
from papermail.config import get_settings
from papermail_dev.bench.run import (
    BenchConfig,
    BenchResult,
    CountingDispatcher,
    PlanResult,
    plan_report_lines,
    report_lines,
)
from papermail_dev.bench.sampling import MachineCounters, MachineLoad, ProcessSampler
from papermail_dev.bench.send_path import SendPathResult, send_path_report_lines


def bench_result(**changes: object) -> BenchResult:
    figures: dict[str, object] = {
        "subscribers": 2000,
        "delivered": 2000,
        "duplicates": 0,
        "planning_seconds": 2.14,
        "total_seconds": 5.0,
        "emails_per_second": 396.2,
        "cpu_ms_per_email": 2.0,
        "peak_rss_mb_per_worker": 204.4,
        "baseline_emails_per_second": 1607.0,
        "ratio_to_baseline": 0.25,
        "variants": 1974,
        "message_bytes_avg": 75049.0,
        "deliveries": 2000,
        "distinct_selections": 1974,
        "distinct_share": 0.987,
    }
    figures.update(changes)
    return BenchResult(**figures)  # type: ignore[arg-type]


def plan_result(**changes: object) -> PlanResult:
    figures: dict[str, object] = {
        "subscribers": 5000,
        "pool_papers": 40,
        "planned": 5000,
        "batches": 50,
        "batch_rows": 5000,
        "deliveries": 5000,
        "distinct_selections": 4892,
        "distinct_share": 0.9784,
        "planning_seconds": 4.08,
        "wall_seconds": 4.1,
        "cpu_seconds": 3.71,
        "postgres_cpu_seconds": 0.22,
        "peak_rss_mb": 239.6,
        "feedback_histories": True,
        "feedback_marks": 37181,
        "seed_seconds": 0.7,
        "model_import_seconds": 2.44,
    }
    figures.update(changes)
    return PlanResult(**figures)  # type: ignore[arg-type]


def line(report: str, label: str) -> str:
    found = [text for text in report.splitlines() if text.startswith(label + " ")]
    assert len(found) == 1, report
    return found[0]


def test_the_delivery_report_labels_planning_and_gives_the_distinct_share() -> None:
    report = report_lines(bench_result())

    assert line(report, "relevance scoring + planning").split() == [
        *["relevance", "scoring", "+", "planning"],
        "2.1",
        "s",
    ]
    assert line(report, "distinct selections").endswith("98.7% (1,974 of 2,000 deliveries)")
    assert line(report, "delivered").endswith("2,000 (duplicates: 0)")
    assert "feedback histories" not in report  # off by default: no line for it
    assert not any(text.startswith("planning ") for text in report.splitlines())
    values = [text[len("relevance scoring + planning  ") :] for text in report.splitlines()]
    assert all(value and not value[0].isspace() for value in values)  # one column


def test_the_delivery_report_says_how_many_marks_readers_had() -> None:
    report = report_lines(bench_result(feedback_histories=True, feedback_marks=14955))
    assert line(report, "feedback histories").endswith("14,955 marks (7.5 a reader)")


def test_the_report_says_what_the_baseline_sent_and_what_the_run_sent() -> None:
    report = report_lines(bench_result(baseline_messages=100, baseline_bytes_avg=46318.9))
    its = line(report, "  its messages")
    assert its.endswith("100 of the run's digests, 46,319 bytes on average")
    assert line(report, "avg message size").endswith("75,049 bytes")


def test_the_figures_as_json_carry_the_distinct_selections() -> None:
    figures = json.loads(bench_result().as_json())
    assert figures["deliveries"] == 2000
    assert figures["distinct_selections"] == 1974
    assert figures["distinct_share"] == pytest.approx(0.987)
    assert figures["planning_seconds"] == pytest.approx(2.14)


def test_the_report_says_how_busy_the_machine_was_while_each_side_sent() -> None:
    # 2 CPUs for 10 s: 20 s of CPU time, 1 s of it idle, 6 s in the kernel.
    before = MachineCounters(total=1000.0, idle=600.0, kernel=100.0, context_switches=50_000)
    delivering = MachineCounters(total=1020.0, idle=601.0, kernel=106.0, context_switches=78_400)
    baseline = MachineLoad(busy_share=0.87, kernel_share=0.22, context_switches=160_000)
    result = bench_result(
        machine=MachineLoad.between(before, delivering),
        baseline_machine=baseline,
        baseline_sent=20_000,
    )

    report = report_lines(result)

    assert line(report, "the machine, delivering").endswith(
        "95% busy, 30% kernel, 14.2 context switches/email"  # 28,400 / 2,000
    )
    assert line(report, "  the machine meanwhile").endswith(
        "87% busy, 22% kernel, 8.0 context switches/email"
    )
    figures = json.loads(result.as_json())
    assert figures["machine"]["busy_share"] == pytest.approx(0.95)
    assert figures["machine"]["context_switches"] == 28_400
    assert figures["baseline_sent"] == 20_000


def test_no_machine_figures_no_machine_lines() -> None:
    report = report_lines(bench_result())
    assert "the machine" not in report
    assert json.loads(bench_result().as_json())["machine"] is None


def test_an_empty_window_is_an_idle_machine_not_a_division_error() -> None:
    same = MachineCounters(total=5.0, idle=1.0, kernel=1.0, context_switches=9)
    load = MachineLoad.between(same, same)
    assert load == MachineLoad(busy_share=0.0, kernel_share=0.0, context_switches=0)
    assert load.describe(0).endswith("0.0 context switches/email")


def test_peak_memory_is_given_with_its_anonymous_part_when_measured() -> None:
    report = report_lines(
        bench_result(
            planner_peak_rss_mb=208.4,
            planner_peak_anonymous_mb=131.2,
            peak_anonymous_mb_per_worker=61.0,
        )
    )

    assert line(report, "peak RSS (pipeline worker)").endswith(
        "208 MB (131 MB anonymous, the rest mapped from files)"
    )
    assert line(report, "peak RSS per send worker").endswith(
        "204 MB (61 MB anonymous, the rest mapped from files)"
    )
    # A run's JSON from before the figure existed reads back as it was printed then.
    older = report_lines(bench_result(planner_peak_rss_mb=208.4))
    assert line(older, "peak RSS (pipeline worker)").endswith(" 208 MB")
    planner = report_lines(plan_result(peak_anonymous_mb=150.0))
    assert line(planner, "peak RSS (planner)").endswith(
        "240 MB (150 MB anonymous, the rest mapped from files)"
    )


def test_the_sampler_sees_a_process_allocate_as_anonymous_memory() -> None:
    me = psutil.Process()
    with ProcessSampler([me], interval=60) as sampler:  # one sample on entry, one on exit
        held = bytearray(64 * 2**20)  # zero-filled: every page written, so resident
    peak_anonymous = sampler.peak_anonymous[me.pid]
    del held

    memory = me.memory_info()
    assert 0 < memory.rss - memory.shared < memory.rss  # a Python process maps its libraries
    assert sampler.peak_rss[me.pid] >= sampler.peak_anonymous[me.pid] + 2**20
    assert peak_anonymous >= memory.rss - memory.shared + 48 * 2**20


def test_the_machines_counters_add_up() -> None:
    counters = MachineCounters.now()
    assert 0 < counters.idle < counters.total
    assert 0 < counters.kernel < counters.total
    assert counters.context_switches > 0


def test_the_plan_only_report() -> None:
    report = report_lines(plan_result())

    assert report == plan_report_lines(plan_result())
    assert line(report, "relevance scoring + planning").endswith("4.1 s (4.1 s wall)")
    assert line(report, "rows planned").endswith("5,000 (50 batches published)")
    assert line(report, "distinct selections").endswith("97.8% (4,892 of 5,000 deliveries)")
    assert line(report, "peak RSS (planner)").endswith("240 MB")
    assert line(report, "relevance model import").endswith("2.4 s (once a process)")
    assert line(report, "feedback histories").endswith("37,181 marks (7.4 a reader)")
    assert "emails/s" not in report and "baseline" not in report
    figures = json.loads(plan_result().as_json())
    assert figures["distinct_share"] == pytest.approx(0.9784)
    assert figures["peak_rss_mb"] == pytest.approx(239.6)


def test_no_deliveries_is_a_zero_share_not_a_division_error() -> None:
    report = report_lines(bench_result(deliveries=0, distinct_selections=0, distinct_share=0.0))
    assert line(report, "distinct selections").endswith("0.0% (0 of 0 deliveries)")


def test_the_plan_only_dispatcher_counts_batches_and_sends_nothing() -> None:
    dispatcher = CountingDispatcher()
    dispatcher.send_batch([1, 2, 3])
    dispatcher.send_batch([4])
    assert (dispatcher.batches, dispatcher.rows, dispatcher.queued) == (2, 4, True)
    with pytest.raises(RuntimeError):
        dispatcher.send_confirmation(1)


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("PAPERMAIL_DATABASE_URL", "PAPERMAIL_REDIS_URL", "PAPERMAIL_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAPERMAIL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_plan_only_runs_the_planning_bench_and_writes_its_figures(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[BenchConfig] = []

    def run_plan_only(config: BenchConfig, *, log: object) -> PlanResult:
        seen.append(config)
        return plan_result()

    def run_bench(config: BenchConfig, *, log: object) -> BenchResult:
        raise AssertionError("--plan-only starts no delivery run")

    monkeypatch.setattr(bench_package, "run_plan_only", run_plan_only)
    monkeypatch.setattr(bench_package, "run_bench", run_bench)
    out = isolated / "figures.json"

    result = CliRunner().invoke(
        main,
        ["bench", "-n", "5000", "--plan-only", "--feedback-histories", "--json-out", str(out)],
    )

    assert result.exit_code == 0, result.output
    assert seen and seen[0].plan_only and seen[0].feedback_histories
    assert seen[0].subscribers == 5000
    assert "planning only, feedback histories" in result.output
    assert "97.8% (4,892 of 5,000 deliveries)" in result.output
    assert json.loads(out.read_text())["distinct_selections"] == 4892


def test_plan_only_fails_when_a_subscriber_went_unplanned(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        bench_package, "run_plan_only", lambda config, log: plan_result(planned=4999)
    )
    result = CliRunner().invoke(main, ["bench", "-n", "5000", "--plan-only"])
    assert result.exit_code != 0
    assert "did not plan one row per subscriber" in result.output


def test_the_default_bench_keeps_its_mode_and_passes_the_flag(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[BenchConfig] = []

    def run_bench(config: BenchConfig, *, log: object) -> BenchResult:
        seen.append(config)
        return bench_result()

    monkeypatch.setattr(bench_package, "run_bench", run_bench)
    result = CliRunner().invoke(main, ["bench", "-n", "2000"])
    assert result.exit_code == 0, result.output
    assert not seen[0].feedback_histories and not seen[0].plan_only
    assert "2,000 subscribers, durable ledger commit" in result.output
    assert "feedback histories" not in result.output


def test_async_commit_means_nothing_without_sending(isolated: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "--plan-only", "--async-commit"])
    assert result.exit_code == 2
    assert "--plan-only sends nothing" in result.output


def send_path_result(**changes: object) -> SendPathResult:
    figures: dict[str, object] = {
        "subscribers": 10_000,
        "planned": 10_000,
        "warmup_messages": 100,
        "sent": 9_900,
        "duplicates": 0,
        "seconds": 9.8,
        "emails_per_second": 1010.2,
        "cpu_ms_per_email": 0.7351,
        "postgres_cpu_ms_per_email": 0.2655,
        "sink_cpu_ms_per_email": 0.2051,
        "message_bytes_avg": 47_375.4,
        "distinct_share": 0.9836,
        "ledger_async_commit": False,
        "feedback_histories": True,
    }
    figures.update(changes)
    return SendPathResult(**figures)  # type: ignore[arg-type]


def test_the_send_in_process_report_gives_the_send_paths_own_cost() -> None:
    report = send_path_report_lines(send_path_result())

    assert line(report, "warm-up batch").endswith("100 messages (not timed)")
    assert line(report, "sent, timed").endswith("9,900 in 9.8 s (duplicates: 0)")
    assert line(report, "send path CPU/email").endswith("0.735 ms (this process)")
    assert line(report, "PostgreSQL CPU/email").endswith("0.266 ms")
    assert line(report, "rows planned").endswith("10,000 (98.4% distinct)")
    assert "baseline" not in report  # nothing here to compare with bare SMTP
    assert "the machine" not in report  # a result from before it was measured


def test_the_send_in_process_report_says_how_busy_the_machine_was() -> None:
    load = MachineLoad(busy_share=0.61, kernel_share=0.18, context_switches=68_310)
    report = send_path_report_lines(send_path_result(machine=load))
    assert line(report, "the machine meanwhile").endswith(
        "61% busy, 18% kernel, 6.9 context switches/email"  # 68,310 / 9,900
    )


def test_send_in_process_runs_that_bench_and_fails_on_a_missing_or_second_copy(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[BenchConfig] = []

    def run_send_in_process(config: BenchConfig, *, log: object) -> SendPathResult:
        seen.append(config)
        return send_path_result(duplicates=len(seen) - 1)

    def run_bench(config: BenchConfig, *, log: object) -> BenchResult:
        raise AssertionError("--send-in-process starts no workers")

    monkeypatch.setattr(bench_package, "run_send_in_process", run_send_in_process)
    monkeypatch.setattr(bench_package, "run_bench", run_bench)
    args = ["bench", "-n", "10000", "--send-in-process", "--async-commit"]

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen[0].ledger_async_commit and not seen[0].plan_only
    assert "the send path in one process, async ledger commit" in result.output
    assert "0.735 ms (this process)" in result.output

    again = CliRunner().invoke(main, args)  # this time the sink got a second copy
    assert again.exit_code != 0
    assert "not every planned row was sent exactly once" in again.output


def test_plan_only_and_send_in_process_are_two_different_runs(isolated: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "--plan-only", "--send-in-process"])
    assert result.exit_code == 2
    assert "not both" in result.output
