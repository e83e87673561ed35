"""Schema state at start-up: apply migrations (embedded default) or check they were applied."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.config import MIGRATIONS_DIR


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _current_revisions(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """The same migrations ``litestar database upgrade`` runs, on the service's own engine."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def pending_revisions(engine: AsyncEngine) -> set[str]:
    """Head revisions the database has not reached (empty when the schema is current)."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revisions)
    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    return heads - current
