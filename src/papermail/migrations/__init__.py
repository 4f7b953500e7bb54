"""Alembic migrations; run with ``papermail db upgrade``."""
