"""Schema management through Alembic (papermail needs no alembic.ini; the repository's
own alembic.ini is for developers running `alembic` by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


class UnknownRevision(ValueError):
    """An upgrade target that no migration has."""


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None  # the package ships its migrations
    return head


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None  # None: no schema at all (a new database)
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    return SchemaState(current=current_revision(engine), head=head_revision())


def upgrade_to(engine: Engine, revision: str) -> None:
    """``upgrade`` with a clear error for a revision that does not exist."""
    try:
        upgrade(engine, revision)
    except CommandError as exc:
        raise UnknownRevision(f"no migration {revision!r}: {exc}") from exc
