"""Settings: what production refuses to start with, and what no mode accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from papermail.config import DEFAULT_SECRET, InsecureConfiguration, Settings
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
