"""Rows written with plain SQL, for the migration tests: a past revision's schema is not
the models' (each insert names only columns every revision since 0001 has)."""

from __future__ import annotations

from sqlalchemy import Connection, text


def insert_subscriber(conn: Connection) -> None:
    """An active subscriber, a@example.org (id 1 in a new database)."""
    conn.execute(
        text(
            "INSERT INTO subscribers (email, status, frequency, max_papers, topics,"
            " follow_organizations, follow_authors, format, timezone, send_hour,"
            " created_at, bounce_count, token_version) VALUES ('a@example.org', 'active',"
            " 'daily', 10, '[]', '[]', '[]', 'html', 'UTC', 7, '2026-11-01', 0, 1)"
        )
    )


def insert_edition(conn: Connection) -> None:
    """The daily edition of 2026-11-01 (id 1 in a new database)."""
    conn.execute(
        text(
            "INSERT INTO editions (day, kind, created_at)"
            " VALUES ('2026-11-01', 'daily', '2026-11-01')"
        )
    )


def insert_sent_delivery(conn: Connection) -> None:
    """Variant 'k' of edition 1, sent to subscriber 1 at 07:00 on 2026-11-01."""
    conn.execute(
        text(
            "INSERT INTO variants (key, edition_id, format, selection, created_at)"
            " VALUES ('k', 1, 'html', '[]', '2026-11-01')"
        )
    )
    conn.execute(
        text(
            "INSERT INTO deliveries (subscriber_id, edition_id, variant_key, status, attempts,"
            " created_at, sent_at) VALUES (1, 1, 'k', 'sent', 1, '2026-11-01',"
            " '2026-11-01 07:00:00')"
        )
    )
