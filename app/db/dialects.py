"""The statements whose spelling differs between the two databases the service runs on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

SUPPORTED = ("postgresql", "sqlite")


def upsertable_insert(dialect: str, model: type[Any]) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` that accepts ``ON CONFLICT`` clauses: PostgreSQL and SQLite spell it the
    same way, from different modules."""
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise ValueError(f"the service supports {' and '.join(SUPPORTED)}, not {dialect}")
