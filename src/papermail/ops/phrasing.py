"""Monitoring figures in words, for people: `papermail status` and /ops share them.

monitoring.py gathers the facts; this module only says them. Nothing here reads a
source, and nothing in monitoring.py writes a sentence.
"""

from __future__ import annotations

import datetime as dt

from papermail.ops.monitoring import StageRun


def ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def describe_run(run: StageRun) -> str:
    """A stage run's detail as a short sentence."""
    d = run.detail
    if run.started_at is None:
        return "never run"
    if run.ok is None:
        return "running (or died without finishing)"
    if not run.ok:
        return f"failed: {d.get('error', 'unknown error')}"
    if run.stage == "ingest":
        return (
            f"{d.get('fetched', 0)} fetched, {d.get('inserted', 0)} new, "
            f"{d.get('rejected', 0)} rejected"
        )
    if run.stage == "edition":
        if d.get("edition_id") is None:
            return "no papers for an edition"
        made = "built" if d.get("created") else "already built"
        return f"#{d['edition_id']} {d.get('kind', '')} {made}, {d.get('papers', 0)} papers"
    if run.stage == "planning":
        batches = d.get("batches", 0)
        return f"{d.get('planned', 0)} planned in {batches} batch{'' if batches == 1 else 'es'}"
    return "ok"


def describe_pause(note: str | None, now: dt.datetime) -> str:
    """control.py's "<iso time> <reason>" as "since 13:26 UTC (2m ago), by ops"."""
    if not note:
        return ""
    stamp, _, reason = note.partition(" ")
    try:
        since = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return note
    when = f"since {since.astimezone(dt.UTC):%H:%M} UTC ({ago(since, now)})"
    return f"{when}, {reason}" if reason else when
