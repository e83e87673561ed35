"""Connections for statements that need no transaction around them.

A single read, or a statement that is atomic by itself, is cheapest on an AUTOCOMMIT
connection: no BEGIN and COMMIT round trips. Behind a pooler in transaction mode
(``USER_SERVICE_DB__TRANSACTION_POOLER``) there is no such thing: outside a transaction
each round trip may reach another server connection, so asyncpg's prepare and its execute
part ("prepared statement ... does not exist", found through a real PgBouncer). There the
statements run in one transaction, committed when the block ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# An execution option of the engine (app/db/config.py), so that code holding only the
# engine knows how it is connected.
TRANSACTION_POOLER = "user_service_transaction_pooler"


@asynccontextmanager
async def statement_by_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection that commits each statement by itself (AUTOCOMMIT), or, behind a
    transaction pooler, all of the block's statements together at its end."""
    if engine.sync_engine.get_execution_options().get(TRANSACTION_POOLER):
        async with engine.begin() as connection:
            yield connection
        return
    async with engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")
