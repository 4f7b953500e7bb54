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
