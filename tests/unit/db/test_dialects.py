"""The statements spelled per database: the two the service runs on, and a clear refusal
of any other."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from app.db.dialects import upsertable_insert
from app.db.models import LoginThrottleEntry


def test_postgresql_and_sqlite_get_their_own_insert_with_on_conflict() -> None:
    assert isinstance(upsertable_insert("postgresql", LoginThrottleEntry), postgresql.Insert)
    assert isinstance(upsertable_insert("sqlite", LoginThrottleEntry), sqlite.Insert)


def test_another_database_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="supports postgresql and sqlite, not mysql"):
        upsertable_insert("mysql", LoginThrottleEntry)
