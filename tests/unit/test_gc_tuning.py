"""The collector's settings for workers: frozen start-up objects, rarer young collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from celery.signals import worker_process_init

from papermail import gc_tuning


@pytest.fixture
def restored() -> Iterator[None]:
    """Put the test process's collector back as it was."""
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)
    gc.enable()


@pytest.mark.usefixtures("restored")
def test_tune_freezes_what_exists_and_collects_young_objects_less_often() -> None:
    _young, middle, old = gc.get_threshold()
    gc_tuning.tune()
    assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, middle, old)
    assert gc.get_freeze_count() > 0  # the start-up's objects: in no generation any more


@pytest.mark.usefixtures("restored")
def test_cycles_are_still_freed_by_the_collector_on_its_own_after_tuning() -> None:
    gc_tuning.tune()

    class Node:
        other: object = None

    freed: list[bool] = []
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    weakref.finalize(a, freed.append, True)
    del a, b
    assert not freed
    held = [[] for _ in range(2 * gc_tuning.YOUNG_THRESHOLD)]  # new containers: a collection
    assert freed and len(held) == 2 * gc_tuning.YOUNG_THRESHOLD


@pytest.mark.usefixtures("restored")
def test_every_celery_pool_process_is_tuned_after_the_fork() -> None:
    import workers.celery_app  # noqa: F401  (connects its signal handlers)

    worker_process_init.send(sender=None)
    assert gc.get_threshold()[0] == gc_tuning.YOUNG_THRESHOLD


@pytest.mark.usefixtures("restored")
def test_a_send_batch_leaves_no_cycles_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a batch leaves in reference cycles is freed when its task ends, not ~80,000
    messages later at the young threshold (each process grew ~20 MB waiting)."""
    from workers import tasks

    from papermail.pipeline.sending import BatchReport

    gc_tuning.tune()
    freed: list[bool] = []

    class Node:
        other: object = None

    def send_batch(*_args: object, **_kwargs: object) -> BatchReport:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: reference counting alone never frees it
        weakref.finalize(a, freed.append, True)
        return BatchReport(sent=1)

    monkeypatch.setattr(tasks.stages, "send_batch", send_batch)
    monkeypatch.setattr(tasks, "wiring", lambda: None)
    monkeypatch.setattr(tasks, "ship_send_metrics", lambda: None)

    assert tasks.send_batch.run([1])["sent"] == 1
    assert freed == [True]


@pytest.mark.usefixtures("restored")
def test_now_and_then_after_batch_collects_the_old_generation_too() -> None:
    gc_tuning.tune()
    gc.collect()
    for _ in range(gc_tuning.FULL_EVERY):
        before = gc.get_stats()[2]["collections"]
        gc_tuning.after_batch()
        if gc.get_stats()[2]["collections"] > before:
            break
    else:
        pytest.fail(f"no full collection in {gc_tuning.FULL_EVERY} batches")
