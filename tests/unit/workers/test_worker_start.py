"""A worker that cannot work says why in one line and stops, instead of idling or a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def start_worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAPERMAIL_")}
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool=solo"],
        cwd=ROOT,
        env=base | {"PAPERMAIL_VAR_DIR": str(tmp_path)} | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_worker_on_the_in_memory_broker_refuses_to_start(tmp_path: Path) -> None:
    result = start_worker(tmp_path)
    assert result.returncode != 0
    assert "a Celery worker needs a broker: set PAPERMAIL_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_setting_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    result = start_worker(tmp_path, PAPERMAIL_BATCH_SIZE="nope")
    assert result.returncode != 0
    assert "bad configuration: PAPERMAIL_BATCH_SIZE" in result.stderr
    assert "Traceback" not in result.stderr
