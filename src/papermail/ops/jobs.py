"""A journal of pipeline runs, so operators can see when each stage last ran and how."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from papermail.models import JobRun


@contextmanager
def recorded(
    sessions: sessionmaker[Session], *, stage: str, clock: Callable[[], dt.datetime]
) -> Iterator[dict[str, Any]]:
    """Record one run of ``stage``; the caller fills the yielded dict with results.

    Uses its own session so a failed stage still leaves a row saying it failed.
    """
    with sessions() as session:
        run = JobRun(stage=stage, started_at=clock(), detail={})
        session.add(run)
        session.commit()
        detail: dict[str, Any] = {}
        try:
            yield detail
        except BaseException as exc:
            detail["error"] = f"{type(exc).__name__}: {exc}"[:500]
            _finish(session, run, ok=False, detail=detail, clock=clock)
            raise
        _finish(session, run, ok=True, detail=detail, clock=clock)


def _finish(
    session: Session,
    run: JobRun,
    *,
    ok: bool,
    detail: dict[str, Any],
    clock: Callable[[], dt.datetime],
) -> None:
    run.finished_at = clock()
    run.ok = ok
    run.detail = dict(detail)
    session.commit()


def last_runs(session: Session, *, stages: tuple[str, ...]) -> dict[str, JobRun | None]:
    return {
        stage: session.scalar(
            select(JobRun).where(JobRun.stage == stage).order_by(JobRun.started_at.desc()).limit(1)
        )
        for stage in stages
    }
