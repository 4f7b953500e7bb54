"""The migrations and the models describe one schema."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from papermail.db import make_engine
from papermail.dbadmin import upgrade
from papermail.models import Base


def test_the_migrations_at_head_build_what_the_models_describe(tmp_path: Path) -> None:
    # A column added to models.py without a migration (or with another type, nullability
    # or server default) is a difference here, before it is one in production.
    engine = make_engine(f"sqlite:///{tmp_path / 'head.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
