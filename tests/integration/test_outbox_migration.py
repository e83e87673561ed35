"""Migration 0005 (outbox_messages) on both databases: the table it creates is the model's
(columns, types, nullability, the unique Message-ID, the partial index of pending rows),
and it downgrades and upgrades again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.config import MIGRATIONS_DIR, database_config
from app.db.models import OutboxMessage
from app.settings import DatabaseSettings


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _outbox_differences(connection: Connection) -> list[Any]:
    # SQLite reflects the 16-byte GUID column as NUMERIC: its types are not comparable.
    context = MigrationContext.configure(connection, opts={"compare_type": connection.dialect.name != "sqlite"})
    diffs = compare_metadata(context, OutboxMessage.metadata)

    def about_outbox(diff: Any) -> bool:
        text = repr(diff)
        return "outbox_messages" in text

    return [diff for diff in diffs if about_outbox(diff)]


def _partial_index(connection: Connection) -> dict[str, Any]:
    [index] = [i for i in inspect(connection).get_indexes("outbox_messages") if i["name"] == "ix_outbox_messages_due"]
    return dict(index)


pytestmark = pytest.mark.filterwarnings("ignore:.*expression-based index")


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request: pytest.FixtureRequest, migrated_database: str, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        engine = database_config(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/outbox.sqlite3")).get_engine()
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(_config(c), "head"))
    else:
        engine = create_async_engine(migrated_database)
    yield engine
    await engine.dispose()


async def test_the_migrated_table_is_the_models_and_survives_a_round_trip(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_outbox_differences) == []
        index = await conn.run_sync(_partial_index)
    assert index["column_names"] == ["next_attempt_at"]
    where = index.get("dialect_options", {}).get(f"{engine.dialect.name}_where")
    assert where is not None
    assert "sent_at IS NULL" in str(where)

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(_config(c), "0004"))
        assert "outbox_messages" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
        await conn.run_sync(lambda c: command.upgrade(_config(c), "head"))
    async with engine.connect() as conn:
        assert await conn.run_sync(_outbox_differences) == []
