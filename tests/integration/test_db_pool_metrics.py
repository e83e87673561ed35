"""The database pool's wait, counted (issue 20, point 4): with real pool exhaustion on
PostgreSQL, every checkout's wait lands in ``db_client_connection_wait_time_seconds`` and
every checkout that gives up in ``db_client_connection_timeouts_total``, the counted facts
UserServiceDBPoolExhausted reads (instead of a gauge sampled every 2 s from SQLAlchemy's
private queue)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.main import create_app
from testkit.live_server import LiveClient, serve
from tests.conftest import make_settings
from tests.integration.faults import REGISTER, register_body

POOL_TIMEOUT_SECONDS = 1
SERIES = re.compile(r"^(db_client_connection_\w+?)(\{[^}]*\})? (\S+)$", re.MULTILINE)


async def _scrape(client: LiveClient) -> dict[str, float]:
    text_format = (await client.get("/metrics")).text
    return {name + (labels or ""): float(value) for name, labels, value in SERIES.findall(text_format)}


async def _until_blocked_on_users(database_url: str, within: float = 10) -> None:
    """Until a backend of the service waits for the lock on users (it holds the pool's
    only connection meanwhile)."""
    deadline = time.monotonic() + within
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND l.relation = 'users'::regclass AND a.application_name = 'user-service'"
    )
    engine = create_async_engine(database_url)
    try:
        while True:
            async with engine.connect() as conn:
                if (await conn.execute(query)).scalar_one() > 0:
                    return
            assert time.monotonic() < deadline, "no request of the service ever waited for the lock"
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


async def test_waits_and_timeouts_of_an_exhausted_pool_are_counted(clean_database: str, signing_key_file: Path) -> None:
    settings = make_settings(
        clean_database, signing_key_file, db={"pool_size": 1, "pool_timeout_seconds": POOL_TIMEOUT_SECONDS}
    )
    async with serve(create_app(settings)) as client:
        assert (await client.post(REGISTER, json=register_body("warm"))).status_code == 201
        before = await _scrape(client)
        locker_engine = create_async_engine(clean_database)
        try:
            async with locker_engine.connect() as locker:
                await locker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
                # One registration takes the pool's only connection and waits on the lock.
                holder = asyncio.create_task(client.post(REGISTER, json=register_body("holder")))
                await _until_blocked_on_users(clean_database)
                # Two more find the pool empty and give up after the pool timeout: 503.
                gave_up = await asyncio.gather(
                    *(client.post(REGISTER, json=register_body(f"late{n}")) for n in range(2))
                )
                # One more waits, and gets the connection once the lock goes half a second later.
                patient = asyncio.create_task(client.post(REGISTER, json=register_body("patient")))
                await asyncio.sleep(0.5)
                await locker.rollback()
            assert (await holder).status_code == 201
            assert (await patient).status_code == 201
        finally:
            await locker_engine.dispose()
        assert [answer.status_code for answer in gave_up] == [503, 503]
        after = await _scrape(client)

    def grew(series: str) -> float:
        return after.get(series, 0.0) - before.get(series, 0.0)

    assert grew("db_client_connection_timeouts_total") == 2
    # The holder's and the patient one's checkouts (and any the others made afterwards).
    assert grew("db_client_connection_wait_time_seconds_count") >= 2
    # The patient checkout waited about half a second: beyond the 50 ms that UserServiceDBPoolExhausted
    # counts as waiting, and within the time it really waited.
    slow = grew("db_client_connection_wait_time_seconds_count") - grew(
        'db_client_connection_wait_time_seconds_bucket{le="0.05"}'
    )
    assert slow >= 1
    assert 0.3 <= grew("db_client_connection_wait_time_seconds_sum") < POOL_TIMEOUT_SECONDS + 1
