"""Migration 0003 (users.email_key) on both databases: it backfills every key, replaces the
lower(email) index, keeps the rest of the data, and refuses existing emails that collide
once folded, naming the accounts and changing nothing (finding 4 of #12)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.config import MIGRATIONS_DIR, database_config
from app.settings import DatabaseSettings

SCHEMA = "email_key_migration"

USERS = sa.table(
    "users",
    sa.column("id", GUID(length=16)),
    sa.column("username", sa.String()),
    sa.column("email", sa.String()),
    sa.column("password_hash", sa.String()),
    sa.column("role", sa.String()),
    sa.column("is_active", sa.Boolean()),
    sa.column("is_verified", sa.Boolean()),
    sa.column("created_at", DateTimeUTC(timezone=True)),
    sa.column("updated_at", DateTimeUTC(timezone=True)),
)
SESSIONS = sa.table(
    "auth_sessions",
    sa.column("id", GUID(length=16)),
    sa.column("user_id", GUID(length=16)),
    sa.column("created_at", DateTimeUTC(timezone=True)),
)


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database: a schema of its own on the test server (first on the search path,
    so the migrations and their version table land there), or a new SQLite file opened as
    the service opens it (foreign keys on)."""
    if request.param == "sqlite":
        engine = database_config(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/migrated.sqlite3")).get_engine()
        yield engine
        await engine.dispose()
        return
    admin = create_async_engine(database_url)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    engine = create_async_engine(database_url, connect_args={"server_settings": {"search_path": SCHEMA}})
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(sa.text(f"DROP SCHEMA {SCHEMA} CASCADE"))
        await admin.dispose()


def _run_alembic(connection: Connection, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


async def migrate(engine: AsyncEngine, revision: str, action: str = "upgrade") -> None:
    """What ``litestar database upgrade`` (and migrate-on-start) runs, to ``revision``."""
    async with engine.begin() as conn:
        await conn.run_sync(_run_alembic, action, revision)


async def revision_of(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def user_indexes_and_columns(engine: AsyncEngine) -> tuple[set[str], set[str]]:
    # From the catalogues: SQLAlchemy does not reflect SQLite's expression indexes.
    if engine.dialect.name == "sqlite":
        indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'"
    else:
        indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'users' AND schemaname = current_schema()"

    def columns(sync: Connection) -> set[str]:
        return {column["name"] for column in sa.inspect(sync).get_columns("users")}

    async with engine.connect() as conn:
        names = set((await conn.execute(sa.text(indexes))).scalars().all())
        return names, await conn.run_sync(columns)


def user_row(email: str, age_days: int) -> dict[str, Any]:
    created = dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days)
    return {
        "id": uuid.uuid4(),
        "username": f"u{uuid.uuid4().hex[:12]}",
        "email": email,
        "password_hash": "$argon2id$not-a-real-hash",
        "role": "user",
        "is_active": True,
        "is_verified": True,
        "created_at": created,
        "updated_at": created,
    }


async def insert(engine: AsyncEngine, table: sa.TableClause, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(table.insert(), rows)


async def test_the_upgrade_backfills_every_key_and_keeps_everything_else(engine: AsyncEngine) -> None:
    await migrate(engine, "0002")
    rows = [user_row("\u00c4NNE@example.com", 3), user_row("bo\u00df@example.com", 2), user_row("Plain@example.com", 1)]
    await insert(engine, USERS, rows)
    await insert(
        engine, SESSIONS, [{"id": uuid.uuid4(), "user_id": rows[0]["id"], "created_at": rows[0]["created_at"]}]
    )

    await migrate(engine, "0003")

    async with engine.connect() as conn:
        keys = {row.email: row.email_key for row in await conn.execute(sa.text("SELECT email, email_key FROM users"))}
        sessions = (await conn.execute(sa.text("SELECT count(*) FROM auth_sessions"))).scalar_one()
    assert keys == {
        "\u00c4NNE@example.com": "\u00e4nne@example.com",
        "bo\u00df@example.com": "boss@example.com",
        "Plain@example.com": "plain@example.com",
    }
    assert sessions == 1  # the table was altered in place, not rebuilt (which cascades on SQLite)
    indexes, _ = await user_indexes_and_columns(engine)
    assert {"uq_users_email_key", "uq_users_username_lower"} <= indexes
    assert "uq_users_email_lower" not in indexes
    # The database itself now refuses a second spelling, and a row without its key.
    for row in [{**user_row("BOSS@example.com", 0), "email_key": "boss@example.com"}, user_row("new@example.com", 0)]:
        with pytest.raises(IntegrityError):
            await insert(engine, USERS, [row])

    await migrate(engine, "0002", action="downgrade")
    indexes, columns = await user_indexes_and_columns(engine)
    assert "email_key" not in columns
    assert {"uq_users_email_lower", "uq_users_username_lower"} <= indexes
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM auth_sessions"))).scalar_one() == 1
    await migrate(engine, "0003")  # and up again
    assert await revision_of(engine) == "0003"


async def test_emails_that_collide_once_folded_stop_the_upgrade_naming_the_accounts(engine: AsyncEngine) -> None:
    await migrate(engine, "0002")
    boss, boss_later = user_row("boss@example.com", 5), user_row("BO\u00df@example.com", 1)
    # Final and medial sigma: lower() keeps them apart on every collation, folding does not.
    odysseus, odysseus_later = (
        user_row("\u03bf\u03b4\u03c5\u03c3\u03c3\u03b5\u03c5\u03c2@example.com", 4),
        user_row("\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3@example.com", 2),
    )
    await insert(engine, USERS, [boss_later, odysseus_later, boss, odysseus, user_row("alone@example.com", 3)])

    with pytest.raises(RuntimeError) as refused:
        await migrate(engine, "0003")

    message = str(refused.value)
    assert "2 group(s)" in message
    # Each group's ids, oldest first; emails stay out of the message (it lands in deploy logs).
    assert f"{boss['id']}, {boss_later['id']}" in message
    assert f"{odysseus['id']}, {odysseus_later['id']}" in message
    assert "example.com" not in message
    # Nothing changed, so the operator can fix the rows and simply run it again.
    assert await revision_of(engine) == "0002"
    indexes, columns = await user_indexes_and_columns(engine)
    assert "email_key" not in columns
    assert "uq_users_email_lower" in indexes

    async with engine.begin() as conn:
        for row, email in [(boss_later, "boss.two@example.com"), (odysseus_later, "odysseus.two@example.com")]:
            await conn.execute(USERS.update().where(USERS.c.id == row["id"]).values(email=email))
    await migrate(engine, "0003")
    assert await revision_of(engine) == "0003"
