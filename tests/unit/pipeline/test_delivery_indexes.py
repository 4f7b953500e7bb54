"""The ledger's partial indexes: migration 0008 on SQLite (PostgreSQL's side is in
tests/integration/test_postgres_domain.py)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Engine, text

from papermail.db import make_engine
from papermail.dbadmin import alembic_config, upgrade
from tests.support.migrations import insert_edition, insert_sent_delivery, insert_subscriber

PARTIAL = {
    "ix_deliveries_status_next": "status <> 'sent'",
    "ix_deliveries_sent_at": "sent_at IS NOT NULL",
}


def _index_sql(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master"
                " WHERE type = 'index' AND tbl_name = 'deliveries'"
            )
        ).all()
    return {name: sql or "" for name, sql in rows}


def _seed_deliveries(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_subscriber(conn)
        insert_edition(conn)
        insert_sent_delivery(conn)


def test_migration_0008_makes_both_indexes_partial_and_back_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'migrate.db'}")  # foreign keys on
    upgrade(engine, "0007")
    _seed_deliveries(engine)
    before = _index_sql(engine)
    assert all("WHERE" not in before[name] for name in PARTIAL)

    upgrade(engine, "0008")
    after = _index_sql(engine)
    for name, predicate in PARTIAL.items():
        assert after[name].endswith(f"WHERE {predicate}"), after[name]
    # Only indexes changed: the ledger's rows are all there.
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, sent_at FROM deliveries")).one() == (
            "sent",
            "2026-11-01 07:00:00",
        )

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0007")
    assert _index_sql(engine) == before
    upgrade(engine)
    assert _index_sql(engine) == after
    engine.dispose()
