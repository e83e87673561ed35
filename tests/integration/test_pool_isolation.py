"""The hashing queue and the database pool cannot starve each other.

A login waiting for a hash holds no database connection, so with a tiny pool and a long
hashing queue every other request still gets a connection at once; and 256 concurrent
requests on a 4-connection pool are all answered.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import httpx
import pytest

from testkit.server_process import SLOW_SINGLE_THREAD_HASHING, ServerProcess

PASSWORD = "harbor-lantern-19-meadow"


@pytest.mark.slow
def test_queued_logins_do_not_take_the_pool_from_other_requests(server_process: Callable[..., ServerProcess]) -> None:
    # Untraced: the latency bound judges the service, not the test run's coverage tracer.
    server = (
        server_process(
            USER_SERVICE_DB__POOL_SIZE="4",
            USER_SERVICE_DB__POOL_TIMEOUT_SECONDS="5",
            **SLOW_SINGLE_THREAD_HASHING,
        )
        .untraced()
        .start()
    )
    try:
        asyncio.run(_exercise(server.base_url))
    finally:
        server.stop()


async def _exercise(base: str) -> None:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        body = {"username": "pooled", "email": "pooled@example.com", "password": PASSWORD}
        assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
        credentials = {"username": "pooled", "password": PASSWORD}
        tokens = (await client.post("/api/v1/auth/login", json=credentials)).json()
        me = {"Authorization": f"Bearer {tokens['access_token']}"}

        # Twenty logins queue behind one hashing thread (seconds of work) ...
        storm = asyncio.gather(*(client.post("/api/v1/auth/login", json=credentials) for _ in range(20)))
        await asyncio.sleep(0.2)
        # ... while reads that need the database keep being answered, quickly.
        reads: list[float] = []
        while not storm.done():
            started = time.perf_counter()
            assert (await client.get("/api/v1/users/me", headers=me)).status_code == 200
            reads.append(time.perf_counter() - started)
        logins = await storm
        assert [r.status_code for r in logins] == [200] * 20
        assert len(reads) >= 10
        # Were a queued login to hold a connection, four of them would hold the whole pool
        # and these reads would wait for the pool timeout (5 s) or fail.
        assert statistics.median(reads) < 0.5, statistics.median(reads)
        assert max(reads) < 2.5, max(reads)

        # 256 requests at once on 4 connections: every one answered, none failed.
        answers = await asyncio.gather(*(client.get("/api/v1/users/me", headers=me) for _ in range(256)))
        assert [r.status_code for r in answers] == [200] * 256
