"""docker-compose.yml validates with Debian's docker-compose (no engine needed for
``config``) and has what a one-host production deployment needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from papermail.dispatch import PIPELINE_QUEUE, QUEUES, SEND_QUEUE
from tests.conftest import service_missing
from tests.support.services import ROOT

pytestmark = pytest.mark.integration

COMPOSE = ROOT / "docker-compose.yml"
EXAMPLE = ROOT / ".env.example"
SECRETS = {
    "PAPERMAIL_SECRET_KEY": "compose-test-secret-key-0123456789abcdef",
    "POSTGRES_PASSWORD": "compose-test-db-password",
    "FLOWER_BASIC_AUTH": "ops:compose-test",
}
LONG_RUNNING = ("postgres", "redis", "web", "worker", "pipeline", "beat", "flower")


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        service_missing("docker-compose (Debian package docker-compose)")
    # --project-directory: .env and env_file are read from there, as an operator's would be.
    return subprocess.run(
        [binary, "--project-directory", str(project), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def project_with(tmp_path: Path, values: dict[str, str]) -> Path:
    """An operator's checkout: .env made from .env.example with ``values`` filled in."""
    lines = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and "=" in line else line)
    (tmp_path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


@pytest.fixture
def config(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    result = compose(project_with(tmp_path, SECRETS), "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_validates(tmp_path: Path) -> None:
    result = compose(project_with(tmp_path, SECRETS), "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_stops_compose_with_a_message(tmp_path: Path, missing: str) -> None:
    values = {k: v for k, v in SECRETS.items() if k != missing}
    result = compose(project_with(tmp_path, values), "config", "-q")
    assert result.returncode != 0
    assert missing in result.stderr


def test_every_service_a_deployment_needs_is_there(config: dict) -> None:  # type: ignore[type-arg]
    services = config["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "migrate",
        "web",
        "worker",
        "pipeline",
        "beat",
        "flower",
        "mailpit",
        "bounces",
    }
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["command"] == ["papermail", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["web"]["command"][:2] == ["papermail", "web"]
    assert services["mailpit"]["profiles"] == ["preview"]
    # Opt-in (the SMTP intake for late bounces): it takes only signed bounce addresses.
    assert services["bounces"]["profiles"] == ["bounces"]
    assert services["bounces"]["command"][:3] == ["papermail", "bounces", "serve"]
    assert set(config["volumes"]) == {"pgdata", "redisdata"}


def test_app_services_wait_for_the_database_redis_and_migrations(config: dict) -> None:  # type: ignore[type-arg]
    for name in ("web", "worker", "pipeline", "beat", "flower"):
        deps = config["services"][name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name


def test_workers_scale_and_run_in_production_mode(config: dict) -> None:  # type: ignore[type-arg]
    worker = config["services"]["worker"]
    # --scale needs nothing per instance: no fixed name, no published port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:4] == ["celery", "-A", "workers.celery_app", "worker"]
    env = worker["environment"]
    assert env["PAPERMAIL_ENVIRONMENT"] == "production"
    assert env == config["services"]["pipeline"]["environment"]
    assert env["PAPERMAIL_REDIS_URL"] == "redis://redis:6379/0"
    assert env["PAPERMAIL_DATABASE_URL"].startswith("postgresql+psycopg://papermail:")


def test_every_queue_has_a_worker_and_only_the_pipeline_worker_plans(config: dict) -> None:  # type: ignore[type-arg]
    """Send workers scale and stay small: planning (scikit-learn, a chunk of readers) runs in
    the one pipeline worker, one task at a time."""
    services = config["services"]

    def queues(name: str) -> set[str]:
        [option] = [a for a in services[name]["command"] if a.startswith("--queues=")]
        return set(option.removeprefix("--queues=").split(","))

    assert queues("worker") == {SEND_QUEUE}
    assert queues("pipeline") == {PIPELINE_QUEUE}
    assert "--concurrency=1" in services["pipeline"]["command"]
    assert queues("worker") | queues("pipeline") == set(QUEUES)


def test_only_the_web_app_is_published_beyond_loopback(config: dict) -> None:  # type: ignore[type-arg]
    # ...and the opt-in bounce receiver: the MX of the bounce domain must take mail.
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}"
            if name not in ("web", "bounces"):
                assert "127.0.0.1" in str(published), f"{name} publishes {port}"


def test_the_example_env_holds_no_secrets_and_names_every_required_one() -> None:
    example = EXAMPLE.read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    assert required == set(SECRETS) | {"PAPERMAIL_BASE_URL"}
    for name in required:
        assert re.search(rf"^{name}=", example, re.MULTILINE), name
    for name in (*SECRETS, "PAPERMAIL_OPS_PASSWORD", "PAPERMAIL_SMTP_PASSWORD"):
        assert re.search(rf"^{name}=$", example, re.MULTILINE), f"{name} must be empty"


def test_the_image_installs_the_package_with_flower() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert 'pip install ".[ops]"' in dockerfile
    assert "USER papermail" in dockerfile
    # The templates ship in the package, so they are in the image before it is installed.
    assert dockerfile.index("COPY templates") < dockerfile.index('pip install ".[ops]"')
    assert "COPY tools" not in dockerfile  # the developer tools stay out of the image
