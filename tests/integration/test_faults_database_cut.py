"""A fault on the real process (``python -m app`` on PostgreSQL), with what a client sees:
the database connection cut while API requests are in flight, some of them inside a write
transaction: fast 503 problem details, nothing half-written, full recovery."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from testkit.server_process import ServerProcess
from testkit.tcp_proxy import ThreadedProxy
from tests.integration.faults import LOGIN, REGISTER, UNTHROTTLED, is_problem, proxied_server, register_body
from tests.integration.helpers import PASSWORD

ME = "/api/v1/users/me"
# What the service is configured with below; the bounds are derived from them.
POOL_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
CALLER_CACHE_SECONDS = 1.0


async def _waiting_on_users_lock(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE NOT l.granted AND l.relation = 'users'::regclass"
                        " AND a.application_name = 'user-service'"
                    )
                )
            ).scalar_one()
        )


async def _until(condition: Callable[[], Any], within: float, what: str) -> float:
    """Polls ``condition`` (a coroutine function) until truthy; returns the seconds it took."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _scalar(db: AsyncEngine, sql: str, **params: Any) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


@dataclass
class Timed:
    response: httpx.Response
    finished: float  # time.monotonic() when the answer arrived


async def _timed(request: Any) -> Timed:
    response = await request
    return Timed(response, time.monotonic())


@pytest.mark.slow
async def test_database_cut_with_requests_in_flight_gives_fast_503s_nothing_half_written_and_recovery(
    server_process: Callable[..., ServerProcess], clean_database: str, db_engine: AsyncEngine
) -> None:
    with proxied_server(
        server_process,
        clean_database,
        USER_SERVICE_DB__POOL_TIMEOUT_SECONDS=str(POOL_TIMEOUT_SECONDS),
        USER_SERVICE_DB__STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS),
        USER_SERVICE_TOKENS__CALLER_CACHE_SECONDS=str(CALLER_CACHE_SECONDS),
        **UNTHROTTLED,
    ) as (server, proxy):
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
            await _exercise_database_cut(client, proxy, db_engine)


async def _exercise_database_cut(client: httpx.AsyncClient, proxy: ThreadedProxy, db: AsyncEngine) -> None:
    for name in ("reader", "signer1", "signer2", "signer3", "signer4"):
        assert (await client.post(REGISTER, json=register_body(name))).status_code == 201
    reader = (await client.post(LOGIN, json={"username": "reader", "password": PASSWORD})).json()
    me = {"Authorization": f"Bearer {reader['access_token']}"}
    sessions_before = await _scalar(db, "SELECT count(*) FROM auth_sessions")

    # Hold the users table so that writes wait inside their transactions: registrations at
    # their INSERT, logins at their session's foreign-key check. Reads still pass.
    async with db.connect() as locker:
        await locker.begin()
        await locker.execute(text("LOCK TABLE users IN EXCLUSIVE MODE"))
        writers = [f"inflight{i}" for i in range(8)]
        in_flight = [asyncio.ensure_future(_timed(client.post(REGISTER, json=register_body(n)))) for n in writers]
        in_flight += [
            asyncio.ensure_future(_timed(client.post(LOGIN, json={"username": f"signer{i}", "password": PASSWORD})))
            for i in range(1, 5)
        ]
        await _until(lambda: _is(_waiting_on_users_lock(db), 12), 30, "12 writes waiting inside transactions")
        assert not any(task.done() for task in in_flight)
        assert (await client.get(ME, headers=me)).status_code == 200  # reads are not held

        proxy.cut()
        cut_at = time.monotonic()
        answered = await asyncio.wait_for(asyncio.gather(*in_flight), timeout=60)
        in_flight_latency = [t.finished - cut_at for t in answered]
        registrations, logins = answered[: len(writers)], answered[len(writers) :]
        assert all(is_problem(t.response, 503, "dependency-unavailable") for t in logins), [
            (t.response.status_code, t.response.text) for t in logins
        ]
        # While it is down: every kind of request is refused at once, the process lives on.
        # (The reader's account was remembered by its last request, for at most
        # CALLER_CACHE_SECONDS, app/accounts/callers.py: a read needs the database again
        # once that has passed, and waiting it out here makes /me one of the refused.)
        await asyncio.sleep(CALLER_CACHE_SECONDS)
        during: list[float] = []
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", ME, {"headers": me}),
            ("POST", LOGIN, {"json": {"username": "signer1", "password": PASSWORD}}),
            ("POST", REGISTER, {"json": register_body("during_outage")}),
        ]
        for method, path, arguments in requests:
            for _ in range(3):
                started = time.monotonic()
                response = await client.request(method, path, **arguments)
                during.append(time.monotonic() - started)
                assert is_problem(response, 503, "dependency-unavailable"), response.text
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 503
        await locker.rollback()

    # Bounded well under what the configuration would let a request wait (pool timeout +
    # statement timeout): the cut is noticed when the socket dies, not by a timer.
    bound = POOL_TIMEOUT_SECONDS
    assert max(in_flight_latency) < bound, in_flight_latency
    assert max(during) < bound, during

    # The held writes resume in PostgreSQL once the lock goes, find their client gone and
    # roll back: none of them may have left a row.
    await _until(lambda: _is(_waiting_on_users_lock(db), 0), 30, "the held writes to end")
    await _until(lambda: _idle_service_backends(db), 30, "the cut-off backends to exit")
    assert await _scalar(db, "SELECT count(*) FROM users WHERE username LIKE 'inflight%'") == 0
    assert await _scalar(db, "SELECT count(*) FROM users WHERE username = 'during_outage'") == 0
    assert await _scalar(db, "SELECT count(*) FROM auth_sessions") == sessions_before
    assert await _scalar(db, _SESSIONS_WITHOUT_TOKENS) == 0

    proxy.restore()
    restored_at = time.monotonic()
    recovery = await _until(lambda: _ready(client), 30, "readiness after the database returned")
    # Full recovery: the same process answers reads and writes, and the writes are stored.
    after = [await client.get(ME, headers=me) for _ in range(20)]
    assert [r.status_code for r in after] == [200] * 20
    assert (await client.post(REGISTER, json=register_body("after_outage"))).status_code == 201
    login = await client.post(LOGIN, json={"username": "after_outage", "password": PASSWORD})
    assert login.status_code == 200
    assert await _scalar(db, "SELECT count(*) FROM users WHERE username = 'after_outage'") == 1
    assert await _scalar(db, _SESSIONS_WITHOUT_TOKENS) == 0
    wrong = [
        (t.response.status_code, t.response.text)
        for t in registrations
        if not is_problem(t.response, 503, "dependency-unavailable")
    ]
    print(  # noqa: T201 - the measurements docs/fuzzing-and-faults.md reports (-s shows them)
        f"\ndatabase cut: {len(answered)} in-flight writes answered "
        f"{sorted(Counter(t.response.status_code for t in answered).items())} in "
        f"{min(in_flight_latency) * 1000:.0f}-{max(in_flight_latency) * 1000:.0f} ms after the cut; "
        f"{len(during)} requests during the outage in {statistics.median(during) * 1000:.1f} ms median, "
        f"{max(during) * 1000:.1f} ms max; ready again {recovery:.2f} s after the restore "
        f"({time.monotonic() - restored_at:.2f} s until 20 reads, a registration and a login had succeeded)"
    )
    if wrong:
        raise AssertionError(f"registrations cut off mid-INSERT were answered {wrong}")


_SESSIONS_WITHOUT_TOKENS = (
    "SELECT count(*) FROM auth_sessions s WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id)"
)


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def _idle_service_backends(db: AsyncEngine) -> bool:
    busy = await _scalar(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'user-service' AND state <> 'idle'",
    )
    return bool(busy == 0)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/health/ready")).status_code == 200
