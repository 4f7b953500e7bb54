"""Settings: what production refuses to start with, and what no mode accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from papermail.config import (
    InsecureConfiguration,
    Settings,
    describe_errors,
    min_lease_seconds,
)
from papermail.secret_policy import DEFAULT_SECRET
from papermail.wiring import Wiring

GOOD = {
    "environment": "production",
    "secret_key": "q7N2-vXk9_LpR4tWz8YcB1mHs6DfGj3E0aUoKe5iTn",
    "base_url": "https://papers.example.org",
    "database_url": "postgresql+psycopg://papermail@db/papermail",
    "redis_url": "redis://redis:6379/0",
}


def settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **{**GOOD, **overrides})  # type: ignore[arg-type]


def test_a_complete_production_configuration_passes() -> None:
    settings().check_production_ready()


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"secret_key": DEFAULT_SECRET}, "PAPERMAIL_SECRET_KEY"),
        ({"secret_key": "short"}, "PAPERMAIL_SECRET_KEY"),
        ({"secret_key": " " * 32}, "too predictable"),
        ({"secret_key": "a" * 40}, "too predictable"),
        ({"secret_key": "abc" * 16}, "too predictable"),
        ({"secret_key": "0123456789" * 4}, "too predictable"),
        ({"base_url": "http://papers.example.org"}, "https://"),
        ({"database_url": "sqlite:///var/p.db"}, "must be PostgreSQL"),
        ({"database_url": None, "redis_url": None}, "must be set"),
        ({"smtp_user": "mailer", "smtp_password": "pw"}, "SMTP AUTH needs"),
    ],
)
def test_production_refuses_to_start_with(overrides: dict[str, object], complaint: str) -> None:
    with pytest.raises(InsecureConfiguration, match=complaint):
        settings(**overrides).check_production_ready()


def test_a_generated_secret_passes_and_a_refusal_says_how_to_make_one() -> None:
    import secrets

    settings(secret_key=secrets.token_urlsafe(32)).check_production_ready()
    with pytest.raises(InsecureConfiguration, match=r"secrets\.token_urlsafe\(32\)"):
        settings(secret_key=" " * 32).check_production_ready()


def test_the_runtime_checks_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(InsecureConfiguration):
        Wiring(settings(secret_key=DEFAULT_SECRET, var_dir=tmp_path))


@pytest.mark.parametrize("missing", ["redis_url", "database_url"])
def test_half_embedded_is_refused_in_every_mode(missing: str) -> None:
    with pytest.raises(ValidationError, match="set both"):
        settings(environment="development", **{missing: None})


def test_smtp_auth_over_tls_is_fine_in_production() -> None:
    settings(smtp_user="mailer", smtp_password="pw", smtp_starttls=True).check_production_ready()


@pytest.mark.parametrize("field", ["mail_from", "list_name", "reply_to"])
def test_header_settings_refuse_line_breaks_and_encoded_words(field: str) -> None:
    for bad in ("papermail <a@example.org>\r\nBcc: x@evil.example", "=?utf-8?q?x?= <a@b.org>"):
        with pytest.raises(ValidationError):
            settings(**{field: bad})


def test_development_defaults_are_embedded() -> None:
    dev = Settings(_env_file=None)
    assert dev.embedded and dev.effective_mail_backend == "outbox"
    dev.check_production_ready()  # development never refuses


# --- the lease and its margin ------------------------------------------------------------------


def test_a_lease_shorter_than_twice_its_margin_is_refused_with_the_rule() -> None:
    # The default 30 s SMTP timeout: a margin of 4 x 30 = 120 s, so a lease of 240 s at least.
    with pytest.raises(ValidationError) as refused:
        settings(lease_seconds=10)
    message = describe_errors(refused.value)
    assert "PAPERMAIL_LEASE_SECONDS=10" in message
    assert "PAPERMAIL_SMTP_TIMEOUT=30" in message
    assert "at least 2 x 120 = 240 s" in message
    with pytest.raises(ValidationError, match="at least 2 x 120 = 240 s"):
        settings(lease_seconds=239)
    assert settings(lease_seconds=240).lease_seconds == 240
    assert settings().lease_seconds == 300  # the default passes with the default timeout


@pytest.mark.parametrize(
    ("smtp_timeout", "minimum"),
    [(30.0, 240), (10.0, 80), (2.6, 21), (1.25, 10), (0.5, 10)],  # floor: a 5 s margin
)
def test_the_minimum_lease_follows_the_smtp_timeout(smtp_timeout: float, minimum: int) -> None:
    assert min_lease_seconds(smtp_timeout) == minimum
    assert settings(smtp_timeout=smtp_timeout, lease_seconds=minimum).lease_seconds == minimum
    if minimum > 10:  # 10 is the floor lease_seconds itself enforces
        with pytest.raises(ValidationError, match=f"= {minimum} s"):
            settings(smtp_timeout=smtp_timeout, lease_seconds=minimum - 1)


@pytest.mark.parametrize(
    ("smtp_timeout", "lease"), [(30.0, 300), (30.0, 240), (1.25, 10), (10.0, 80), (7.0, 60)]
)
def test_every_accepted_lease_leaves_a_batch_half_of_it_and_the_full_margin(
    smtp_timeout: float, lease: int, tmp_path: Path
) -> None:
    s = settings(smtp_timeout=smtp_timeout, lease_seconds=lease, var_dir=tmp_path)
    policy = Wiring(s).send_policy  # the one margin: the Settings', not a formula of its own
    assert policy.lease_margin_seconds == s.lease_margin_seconds
    assert policy.lease_margin_seconds == max(5.0, 4 * smtp_timeout)
    # sending.py stops min(margin, lease / 2) before the lease ends: the margin is never cut.
    assert policy.lease_margin_seconds <= lease / 2


def test_the_fault_tests_fast_lease_is_a_valid_configuration(tmp_path: Path) -> None:
    from tests.integration.faults_support import service_env

    class Sink:
        host, port = "127.0.0.1", 2525

    env = service_env(
        db_url="postgresql+psycopg://u@h/d",
        redis_url="redis://h:6379/14",
        sink=Sink(),  # type: ignore[arg-type]
        var_dir=tmp_path,
    )
    fields = {key.removeprefix("PAPERMAIL_").lower(): value for key, value in env.items()}
    s = Settings(_env_file=None, **fields)  # type: ignore[arg-type]
    assert s.lease_seconds == 10  # SIGKILLed batches come back within seconds


def test_arxiv_settings_default_and_validate() -> None:
    settings = Settings(_env_file=None)
    assert settings.arxiv_api_base == "http://export.arxiv.org"
    assert settings.arxiv_category_list == ["cs.LG", "cs.CV", "cs.CL", "cs.RO", "cs.AI"]
    chosen = Settings(_env_file=None, arxiv_categories=" cs.RO, stat.ML cs.RO ")
    assert chosen.arxiv_category_list == ["cs.RO", "stat.ML"]
    with pytest.raises(ValidationError, match="unknown arXiv category: cs.Robots"):
        Settings(_env_file=None, arxiv_categories="cs.RO,cs.Robots")
    with pytest.raises(ValidationError, match="absolute http"):
        Settings(_env_file=None, arxiv_api_base="export.arxiv.org")


def test_arxiv_pacing_defaults_to_arxivs_rule_and_refuses_nonsense() -> None:
    settings = Settings(_env_file=None)
    assert (settings.arxiv_pause_seconds, settings.arxiv_page_size) == (3.0, 100)
    assert Settings(_env_file=None, arxiv_pause_seconds=0).arxiv_pause_seconds == 0
    for bad in ({"arxiv_pause_seconds": -1}, {"arxiv_page_size": 0}, {"arxiv_page_size": 2001}):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, **bad)
