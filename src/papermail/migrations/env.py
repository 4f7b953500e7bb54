"""Alembic environment.

papermail.dbadmin passes the connection (or URL) in. Run by hand (`alembic upgrade head`
from the repository root), the URL comes from papermail's own settings: the same
PAPERMAIL_DATABASE_URL (or embedded SQLite under PAPERMAIL_VAR_DIR) the app uses.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from papermail.models import Base

config = context.config
target_metadata = Base.metadata

if not config.get_main_option("sqlalchemy.url") and "connection" not in config.attributes:
    from papermail.config import get_settings

    url = get_settings().effective_database_url
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section) or {},
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection) -> None:
    # Batch mode lets ALTERs work on SQLite too (it rebuilds the table).
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
