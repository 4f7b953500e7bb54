"""`papermail bench` leaves nothing behind, however it ends, and never starts beside old workers.

No services here: worker process groups are shell processes, the database and Redis are
recorded calls. tests/integration/test_bench_cleanup.py does it with the real ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from papermail.cli.common import Fail
from papermail.pipeline.planning import PlanReport
from papermail_dev.bench import lifecycle, run
from papermail_dev.bench.celery_workers import group_members, stop_workers
from papermail_dev.bench.lifecycle import RunResources, Terminated, signals_as_exceptions
from papermail_dev.bench.run import BenchConfig, EarlierRunStillRunning, refuse_if_workers_answer
from papermail_dev.bench.scratch import Prepared
from papermail_dev.bench.sink_process import SinkProcess


def process_group(script: str) -> psutil.Popen:
    """A shell leading a process group of its own, as a Celery worker does (plus children)."""
    proc = psutil.Popen(["sh", "-c", script], start_new_session=True)
    assert wait_until(lambda: len(group_members(proc.pid)) >= 2), "the group did not start"
    return proc


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def groups() -> Iterator[list[psutil.Popen]]:
    started: list[psutil.Popen] = []
    yield started
    for proc in started:  # whatever the test left: never leak a process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def test_sigterm_becomes_terminated_in_the_main_thread_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as ended, signals_as_exceptions():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert ended.value.code == 128 + signal.SIGTERM  # what a shell reports for SIGTERM
    assert str(ended.value) == "terminated by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_sighup_stays_ignored_under_nohup() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals_as_exceptions():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # nothing happens
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_stopping_a_worker_stops_its_whole_process_group(groups: list[psutil.Popen]) -> None:
    # The main process exits on SIGTERM; its child (a pool process) would run on, orphaned.
    worker = process_group("sleep 60 & wait")
    groups.append(worker)
    child = next(p for p in group_members(worker.pid) if p.pid != worker.pid)

    stop_workers([worker])

    assert group_members(worker.pid) == []
    assert gone(child.pid)


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(
    groups: list[psutil.Popen],
) -> None:
    worker = process_group("trap '' TERM; sleep 60 & wait")
    groups.append(worker)
    started = time.monotonic()

    stop_workers([worker], grace=0.5)

    assert group_members(worker.pid) == []
    assert time.monotonic() - started < 10


class Recorder:
    """Stands for PostgreSQL and Redis: what was created, dropped and flushed, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        monkeypatch.setattr(lifecycle, "create_database", self.create)
        monkeypatch.setattr(lifecycle, "drop_database", self.drop)
        monkeypatch.setattr(lifecycle, "flush_redis", self.flush)

    def create(self, admin_url: str, name: str) -> str:
        self.calls.append(("create", name))
        return f"postgresql+psycopg://x/{name}"

    def drop(self, admin_url: str, name: str) -> None:
        self.calls.append(("drop", name))

    def flush(self, url: str) -> None:
        self.calls.append(("flush", url))


@pytest.mark.parametrize("ending", ["SIGTERM", "KeyboardInterrupt", "RuntimeError"])
def test_every_exit_path_stops_workers_and_sink_and_drops_and_flushes(
    ending: str, monkeypatch: pytest.MonkeyPatch, groups: list[psutil.Popen], tmp_path: Path
) -> None:
    recorder = Recorder(monkeypatch)
    worker = process_group("sleep 60 & wait")  # its child outlives a SIGTERM to it
    groups.append(worker)
    monkeypatch.setattr(lifecycle, "start_worker", lambda env, **kw: worker)
    logged: list[str] = []
    expected = {"SIGTERM": Terminated, "KeyboardInterrupt": KeyboardInterrupt}
    sink: SinkProcess | None = None

    with (
        pytest.raises(expected.get(ending, RuntimeError)),
        signals_as_exceptions(),
        RunResources(
            redis_url="redis://:hunter2@127.0.0.1:6379/9",
            pg_admin_url="postgresql://postgres@127.0.0.1:5432/test",
            log=logged.append,
        ) as resources,
    ):
        resources.create_database("papermail_bench_0123456789")
        sink = resources.start_sink()
        resources.start_worker({}, name="bench0@%h", concurrency=1, log_path=tmp_path / "w.log")
        if ending == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        elif ending == "KeyboardInterrupt":
            raise KeyboardInterrupt
        else:
            raise RuntimeError("the run failed")

    assert group_members(worker.pid) == []
    assert sink is not None and gone(sink.pid)
    assert recorder.calls == [
        ("create", "papermail_bench_0123456789"),
        ("drop", "papermail_bench_0123456789"),
        ("flush", "redis://:hunter2@127.0.0.1:6379/9"),
    ]
    assert not any("could not" in line for line in logged), logged
    why = {"SIGTERM": "terminated by SIGTERM", "KeyboardInterrupt": "KeyboardInterrupt"}
    if ending in why:
        assert logged == [f"interrupted ({why[ending]}): stopping and cleaning up"]
    else:
        assert logged == []


def test_a_failing_cleanup_step_does_not_skip_the_next_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder(monkeypatch)

    def drop_fails(admin_url: str, name: str) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(lifecycle, "drop_database", drop_fails)
    logged: list[str] = []
    with RunResources(
        redis_url="redis://r/9", pg_admin_url="postgresql://p/test", log=logged.append
    ) as res:
        res.create_database("papermail_bench_x")

    assert recorder.calls[-1] == ("flush", "redis://r/9")
    assert logged == ["cleanup: could not drop the scratch database: connection refused"]


def test_a_second_signal_during_the_cleanup_does_not_cut_it_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder(monkeypatch)

    def drop_and_get_signalled(admin_url: str, name: str) -> None:
        recorder.calls.append(("drop", name))
        os.kill(os.getpid(), signal.SIGTERM)  # an impatient second `kill`, or Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(lifecycle, "drop_database", drop_and_get_signalled)
    with (
        pytest.raises(Terminated),
        signals_as_exceptions(),
        RunResources(redis_url="redis://r/9", pg_admin_url="postgresql://p/test") as res,
    ):
        res.create_database("papermail_bench_x")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    assert [call for call, _ in recorder.calls] == ["create", "drop", "flush"]


def test_a_sink_process_that_died_closes_without_an_error() -> None:
    sink = SinkProcess()
    os.kill(sink.pid, signal.SIGKILL)
    assert wait_until(lambda: gone(sink.pid))
    sink.close()  # a BrokenPipeError here would stop the cleanup before the database goes


def test_ctrl_c_on_the_terminal_leaves_the_sink_to_the_run() -> None:
    # Ctrl-C signals the whole foreground group; the sink must outlive it to be stopped last.
    with SinkProcess() as sink:
        os.kill(sink.pid, signal.SIGINT)
        time.sleep(0.3)
        assert sink.stats() == (0, 0, 0, 0)


def test_old_workers_on_the_broker_refuse_the_run_with_their_pids_and_how_to_stop_them() -> None:
    with pytest.raises(EarlierRunStillRunning) as refused:
        refuse_if_workers_answer(
            "redis://:hunter2@127.0.0.1:6379/10",
            answering=lambda url: {"bench0@box": 4242, "bench1@box": 4243},
        )
    message = refused.value.message
    assert "bench0@box (pid 4242), bench1@box (pid 4243)" in message
    assert "kill -TERM 4242 4243" in message
    assert "pkill -f 'workers.celery_app worker.*-n bench'" in message
    assert "redis://:***@127.0.0.1:6379/10" in message and "hunter2" not in message
    refuse_if_workers_answer("redis://r/10", answering=lambda url: {})  # none: no refusal


def test_the_run_warns_what_it_flushes_and_creates_before_it_touches_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    touched: list[str] = []
    monkeypatch.setattr(run, "flush_redis", lambda url: touched.append(url))

    def refuse(url: str) -> None:  # stop the run right after its first check
        raise EarlierRunStillRunning("workers answer")

    monkeypatch.setattr(run, "refuse_if_workers_answer", refuse)
    logged: list[str] = []
    config = BenchConfig(
        subscribers=10,
        redis_url="redis://:hunter2@127.0.0.1:6379/10",
        pg_admin_url="postgresql://postgres:pw@127.0.0.1:5432/test",
    )
    with pytest.raises(EarlierRunStillRunning):
        run.run_bench(config, log=logged.append)

    assert touched == []
    assert len(logged) == 1
    line = logged[0]
    assert line.startswith("warning: this run flushes Redis redis://:***@127.0.0.1:6379/10 ")
    assert "creates PostgreSQL database papermail_bench_" in line
    assert "postgresql://postgres:***@127.0.0.1:5432" in line
    assert "hunter2" not in line and ":pw@" not in line


def test_scratch_databases_left_by_a_sigkilled_run_are_named_with_how_to_drop_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "existing_databases", lambda url, prefix: ["papermail_bench_ab"])
    note = run.leftovers_note("postgresql://postgres@127.0.0.1:5432/test", "papermail_bench")
    assert note is not None and "papermail_bench_ab" in note
    assert """psql -c 'DROP DATABASE "papermail_bench_ab" WITH (FORCE)'""" in note
    monkeypatch.setattr(run, "existing_databases", lambda url, prefix: [])
    assert run.leftovers_note("postgresql://p/test", "papermail_bench") is None


def test_an_unreachable_broker_is_one_clear_line_not_a_traceback() -> None:
    def refused(url: str) -> dict[str, int | None]:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    with pytest.raises(Fail, match=r"cannot reach the bench's Redis at redis://127\.0\.0\.1"):
        refuse_if_workers_answer("redis://127.0.0.1:6390/9", answering=refused)


class FakeWiring:
    """Stands for papermail.wiring.Wiring in a plan-only run: what run_plan_only closes."""

    def __init__(self, settings: object) -> None:
        self.settings = settings
        self.sessions = object()
        self.closed: list[str] = []
        self.engine = SimpleNamespace(dispose=lambda: self.closed.append("engine"))
        self.redis = SimpleNamespace(close=lambda: self.closed.append("redis"))


@pytest.mark.parametrize("ending", ["finishes", "RuntimeError", "KeyboardInterrupt"])
def test_plan_only_plans_in_process_and_cleans_up_however_it_ends(
    ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(monkeypatch)
    monkeypatch.setattr(run, "refuse_if_workers_answer", lambda url: None)
    monkeypatch.setattr(run, "leftovers_note", lambda url, prefix: None)
    monkeypatch.setattr(run, "flush_redis", lambda url: recorder.calls.append(("flush", url)))
    monkeypatch.setattr(
        run,
        "prepare_run",
        lambda settings, **kw: Prepared(edition_id=3, pool=40, feedback_marks=75),
    )
    wirings: list[FakeWiring] = []

    def wiring(settings: object) -> FakeWiring:
        wirings.append(FakeWiring(settings))
        return wirings[-1]

    monkeypatch.setattr(run, "Wiring", wiring)
    monkeypatch.setattr(run, "planning_seconds", lambda sessions: 1.5)
    monkeypatch.setattr(run, "distinct_selections", lambda sessions, edition_id: (10, 9))
    raised = {
        "RuntimeError": RuntimeError("planning failed"),
        "KeyboardInterrupt": KeyboardInterrupt(),
    }
    planned_with: list[dict[str, object]] = []

    def plan(
        w: object, *, dispatcher: run.CountingDispatcher, **kwargs: object
    ) -> list[PlanReport]:
        planned_with.append(kwargs)
        if ending in raised:
            raise raised[ending]
        dispatcher.send_batch(list(range(1, 11)))
        return [PlanReport(edition_id=3, considered=10, planned=10, batches=1)]

    monkeypatch.setattr(run.stages, "plan", plan)
    # The run tunes its process's collector as a worker's; not this test process's.
    tuned: list[bool] = []
    monkeypatch.setattr(run.gc_tuning, "tune", lambda: tuned.append(True))
    logged: list[str] = []
    config = BenchConfig(
        subscribers=10, plan_only=True, feedback_histories=True, redis_url="redis://r/10"
    )

    if ending in raised:
        with pytest.raises(type(raised[ending])):
            run.run_plan_only(config, log=logged.append)
    else:
        result = run.run_plan_only(config, log=logged.append)
        assert tuned == [True]
        assert (result.planned, result.batches, result.batch_rows) == (10, 1, 10)
        assert (result.deliveries, result.distinct_selections) == (10, 9)
        assert result.distinct_share == pytest.approx(0.9)
        assert result.planning_seconds == 1.5 and result.feedback_marks == 75
        assert result.peak_rss_mb > 0 and result.notes == []

    assert planned_with == [{"now": planned_with[0]["now"], "due_only": False, "edition_ids": [3]}]
    assert wirings and wirings[0].closed == ["engine", "redis"]
    names = [name for call, name in recorder.calls if call == "create"]
    assert len(names) == 1 and names[0].startswith("papermail_bench_")
    assert recorder.calls == [
        ("flush", "redis://r/10"),  # before: a clean Redis for the run
        ("create", names[0]),
        ("drop", names[0]),
        ("flush", "redis://r/10"),
    ]
    assert logged[0].startswith("warning: this run flushes Redis redis://r/10")
