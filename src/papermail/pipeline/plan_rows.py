"""Writing a planned chunk: its new variants and delivery rows, then its send batches.

Bulk statements, one per chunk on PostgreSQL (arrays and one JSON document), and the
statistics refresh that keeps each send batch's claim on the primary key.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import cast as type_cast

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from papermail.models import Delivery, DeliveryStatus, Variant


def refresh_statistics(session: Session) -> None:
    """ANALYZE after a bulk insert, before any batch can claim from it.

    With the statistics of an hour ago PostgreSQL believes no row is pending, plans
    each claim through the status index and reads every pending row of the edition
    to claim a hundred (measured: 8.7 ms a claim at 20,000 rows, linear in the size).
    Once statistics show pending rows, the primary key wins for any larger count, so a
    run re-analyzes only when its rows have doubled: 6 times for a million rows, not 50
    (each ANALYZE samples 30,000 rows).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE deliveries"))
        session.commit()


def batches_by_variant(created: Sequence[tuple[int, str]], size: int) -> list[list[int]]:
    """Batches that each touch as few variants as possible.

    A send batch encodes every variant it meets once; ordering rows by variant
    keeps that to one or two per batch instead of dozens.
    """
    ordered = [row_id for row_id, _key in sorted(created, key=lambda rk: (rk[1], rk[0]))]
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


_PG_INSERT_DELIVERIES = text(
    "INSERT INTO deliveries (subscriber_id, edition_id, variant_key, status, attempts,"
    " created_at, dispatched_at)"
    " SELECT s, :edition_id, k, 'pending', 0, :now, :now"
    " FROM unnest(CAST(:sids AS integer[]), CAST(:keys AS varchar[])) AS t(s, k)"
    " ON CONFLICT (subscriber_id, edition_id) DO NOTHING"
    " RETURNING id, variant_key"
)


# The rows as one JSON document: a text[] of JSON strings costs the driver an escaping
# pass per element (measured: 2.2 s of a 20,000-reader plan).
_PG_INSERT_VARIANTS = text(
    "INSERT INTO variants (key, edition_id, format, selection, created_at)"
    " SELECT v->>0, :edition_id, v->>1, v->2, :now"
    " FROM json_array_elements(CAST(:rows AS json)) AS v"
    " ON CONFLICT (key) DO NOTHING"
)


def insert_rows(
    session: Session,
    new_variants: list[dict[str, object]],
    values: list[tuple[int, str]],
    *,
    edition_id: int,
    now: dt.datetime,
) -> list[tuple[int, str]]:
    """Insert (subscriber, variant) rows; returns (delivery id, variant key) of new ones."""
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = postgresql.insert if postgres else sqlite.insert
    if new_variants:
        if postgres:  # one statement over arrays, as for deliveries below
            new = [[v["key"], v["format"], v["selection"]] for v in new_variants]
            session.execute(
                _PG_INSERT_VARIANTS,
                {"rows": json.dumps(new), "edition_id": edition_id, "now": now},
            )
        else:
            session.execute(
                insert(Variant).on_conflict_do_nothing(index_elements=["key"]),
                new_variants,
            )
    if not values:
        return []
    if postgres:
        # One statement over two arrays: ~20x faster than an executemany at a million rows.
        rows = session.execute(
            _PG_INSERT_DELIVERIES,
            {
                "edition_id": edition_id,
                "now": now,
                "sids": [sid for sid, _ in values],
                "keys": [key for _, key in values],
            },
        )
        return [(row_id, key) for row_id, key in type_cast(Iterable[tuple[int, str]], rows)]
    # executemany form: SQLAlchemy's insertmanyvalues splits it under SQLite's
    # bind-parameter limit and still returns the new ids.
    stmt = (
        insert(Delivery)
        .on_conflict_do_nothing(index_elements=["subscriber_id", "edition_id"])
        .returning(Delivery.id, Delivery.variant_key)
    )
    params = [
        {
            "subscriber_id": sid,
            "edition_id": edition_id,
            "variant_key": key,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "created_at": now,
            "dispatched_at": now,
        }
        for sid, key in values
    ]
    return [(row_id, key) for row_id, key in session.execute(stmt, params)]
