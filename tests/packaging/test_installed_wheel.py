"""A papermail installed from its wheel (not this checkout) runs the demo end to end.

The wheel is built from the repository and installed into a fresh virtualenv that
borrows the dev environment's dependencies but not its editable papermail, then run
from an empty directory: templates, migrations and the bundled sample must all come
from inside the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(dist), str(ROOT)], check=True, env=_clean_env()
    )
    [wheel] = dist.glob("papermail-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies come from the dev environment; papermail itself only from the wheel.
    Path(site, "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the borrowed site-packages holds the editable papermail, which
    # pip would otherwise call "already satisfied".
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--ignore-installed", str(wheel)],
        check=True,
        env=_clean_env(),
    )
    return env_dir


def _clean_env() -> dict[str, str]:
    """No PAPERMAIL_* settings and no PYTHONPATH: only the wheel may provide papermail."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("PAPERMAIL_") and k != "PYTHONPATH"
    }


def _run(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = _clean_env() | {"PAPERMAIL_VAR_DIR": str(cwd / "var"), "COLUMNS": "200"}
    return subprocess.run(
        [str(env_dir / "bin" / "papermail"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_installed_package_is_the_wheel_not_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import papermail.config as c; print(c.__file__); print(c.default_templates_dir())",
        ],
        cwd=tmp_path,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where
    assert (Path(where[1]) / "email" / "digest" / "body.mjml.j2").is_file()


def test_an_installed_papermail_runs_the_demo_and_sends_every_email(
    installed: Path, tmp_path: Path
) -> None:
    result = _run(installed, tmp_path, "demo", "--offline")
    assert result.returncode == 0, result.stdout + result.stderr
    outbox = tmp_path / "var" / "demo" / "outbox"
    assert len(list(outbox.glob("*.eml"))) == 5, result.stdout
    assert "retry" not in result.stdout
