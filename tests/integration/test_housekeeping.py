"""The periodic housekeeping round: failed-login counters nobody touched for longer than
the throttle remembers are deleted, and an unreachable database only postpones it."""

from __future__ import annotations

import datetime as dt

from litestar.stores.memory import MemoryStore
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.identity.throttle import DatabaseThrottleStore, LoginThrottle, throttle_key
from app.lifespan import forget_stale_abuse_state
from app.settings import LoginThrottleSettings

POLICY = LoginThrottleSettings(forget_after_seconds=3600)


async def _entry(db: AsyncEngine, name: str, last_failure: dt.datetime) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text("INSERT INTO login_throttle (key, failures, last_failure_at) VALUES (:key, 3, :at)"),
            {"key": throttle_key(name), "at": last_failure},
        )


async def test_a_round_forgets_only_counters_older_than_the_policy(db_engine: AsyncEngine) -> None:
    now = dt.datetime.now(dt.UTC)
    await _entry(db_engine, "gave-up-long-ago", now - dt.timedelta(hours=2))
    await _entry(db_engine, "still-guessing", now - dt.timedelta(minutes=5))
    throttle = LoginThrottle(DatabaseThrottleStore(db_engine, POLICY), POLICY)

    assert await forget_stale_abuse_state(throttle, MemoryStore()) == 1
    async with db_engine.connect() as conn:
        left = (await conn.execute(text("SELECT key FROM login_throttle"))).scalars().all()
    assert left == [throttle_key("still-guessing")]
    # Nothing stale is left for the next round.
    assert await forget_stale_abuse_state(throttle, MemoryStore()) == 0


async def test_a_round_without_the_database_is_skipped_not_fatal() -> None:
    unreachable = create_async_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:9/none", connect_args={"timeout": 1}, pool_pre_ping=False
    )
    try:
        throttle = LoginThrottle(DatabaseThrottleStore(unreachable, POLICY), POLICY)
        assert await forget_stale_abuse_state(throttle, MemoryStore()) == 0
    finally:
        await unreachable.dispose()
