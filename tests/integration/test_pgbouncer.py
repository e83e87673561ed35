"""The service through a real PgBouncer in transaction mode (issue 19), as production runs
it behind CloudNativePG's Pooler: Debian's pgbouncer with two server connections for the
service's pool of twenty, so every server connection is shared between clients.

The known traps are asyncpg's prepared statements (named, cached per connection, which
another client then meets on the same server connection) and ``statement_timeout`` sent as a
startup parameter, which PgBouncer refuses. ``USER_SERVICE_DB__TRANSACTION_POOLER=true``
turns both off; the timeout is then the role's (here the database's) setting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.config import database_config
from app.settings import DatabaseSettings
from testkit.pgbouncer import throwaway_pgbouncer
from testkit.postgres import migrate
from testkit.server_process import ServerProcess
from tests.integration.faults import accounts_in_parallel


@pytest.fixture
def pooled(fresh_database: str) -> Iterator[str]:
    """The fresh database, migrated directly (DDL never goes through the pooler), its
    statement timeout set where a pooled service cannot send it, behind PgBouncer."""
    migrate(fresh_database)

    async def set_timeout() -> None:
        engine = create_async_engine(fresh_database, isolation_level="AUTOCOMMIT")
        async with engine.connect() as connection:
            database = fresh_database.rsplit("/", 1)[1]
            await connection.execute(text(f"ALTER DATABASE \"{database}\" SET statement_timeout = '7s'"))
        await engine.dispose()

    anyio.run(set_timeout)
    with throwaway_pgbouncer(fresh_database, server_connections=2) as url:
        yield url


async def test_a_pooled_engine_shares_two_server_connections_between_twenty_clients(pooled: str) -> None:
    engine = database_config(DatabaseSettings(url=pooled, transaction_pooler=True, pool_size=20)).get_engine()

    async def transactions(client: int) -> list[str]:
        seen = []
        for _ in range(5):
            async with engine.begin() as connection:
                # Three statements, two with parameters (prepared), in one transaction.
                await connection.execute(text("SELECT count(*) FROM users WHERE username = :name"), {"name": "x"})
                await connection.execute(text("SELECT CAST(:n AS integer) + 1"), {"n": client})
                seen.append((await connection.execute(text("SHOW statement_timeout"))).scalar_one())
        return seen

    try:
        results = await asyncio.gather(*(transactions(client) for client in range(20)))
    finally:
        await engine.dispose()
    # Every transaction ran, on a server session that has the database's timeout.
    assert [timeout for result in results for timeout in result] == ["7s"] * 100


async def test_without_the_pooler_setting_pgbouncer_refuses_the_connection(pooled: str) -> None:
    engine = database_config(DatabaseSettings(url=pooled, transaction_pooler=False)).get_engine()
    try:
        with pytest.raises(Exception, match="unsupported startup parameter: statement_timeout"):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def test_the_service_serves_through_pgbouncer(pooled: str, signing_key_file: Path, tmp_path: Path) -> None:
    server = ServerProcess(
        database_url=pooled,
        signing_key_file=signing_key_file,
        log_file=tmp_path / "server.log",
        USER_SERVICE_DB__TRANSACTION_POOLER="true",
    ).start()
    try:
        # Sixteen people at once; each step's statements interleave on two server connections.
        anyio.run(accounts_in_parallel, server.base_url, "pooled", 16)
        assert httpx.get(f"{server.base_url}/health/ready", timeout=10).status_code == 200
    finally:
        server.stop()
    assert "prepared statement" not in server.output
