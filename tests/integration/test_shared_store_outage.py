"""Redis, the shared store of the rate limits and the login throttle, going away and coming
back, over real HTTP with a real redis-server behind a TCP proxy the test cuts (issue 12,
finding 9). No client may get a 500:

- the per-address rate limits fail open to this process's memory: still enforced, per
  replica, until Redis answers again;
- the login throttle fails over to PostgreSQL (the store it uses without Redis), which
  every replica shares: guessing stays bounded across replicas;
- both are logged, counted (user_service_shared_store_errors_total) and visible as
  user_service_shared_store_up 0, which UserServiceSharedStoreDown alerts on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from testkit.tcp_proxy import TcpProxy
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, Client, login, register, unique_name

LIMITS = {"enabled": True, "login": "4/minute", "registration": "50/minute", "refresh": "50/minute"}
THROTTLE = {"free_attempts": 2, "base_delay_seconds": 30, "max_delay_seconds": 60}
RECOVERY_SECONDS = 10.0


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    yield proxy
    await proxy.cut()


def outage_settings(settings: Settings, proxy: TcpProxy, *, rate_limits: bool, throttle: bool) -> Settings:
    assert settings.tokens.signing_key_file is not None
    return make_settings(
        settings.db.url,
        settings.tokens.signing_key_file,
        rate_limits=LIMITS if rate_limits else {"enabled": False},
        login_throttle=THROTTLE if throttle else {"enabled": False},
    ).model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{proxy.port}/0")})


async def metric(client: Client, name: str, **labels: str) -> float:
    exposition = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not exposed")


async def until_redis_answers(client: Client) -> None:
    for _ in range(int(RECOVERY_SECONDS / 0.2)):
        if await metric(client, "user_service_shared_store_up") == 1:
            return
        await asyncio.sleep(0.2)
    pytest.fail("the shared store never answered")


def kind(response: Any) -> str:
    return str(response.json()["type"]).rsplit("/", 1)[-1]


async def test_rate_limits_fail_open_to_process_memory_while_redis_is_away(
    settings: Settings, redis_proxy: TcpProxy
) -> None:
    async with serve(create_app(outage_settings(settings, redis_proxy, rate_limits=True, throttle=False))) as client:
        name = unique_name()
        await register(client, name)
        assert await metric(client, "user_service_shared_store_up") == 1
        await redis_proxy.cut()

        answers = [await login(client, name, "wrong-password-1") for _ in range(6)]
        # Still limited (4 a minute), now by this process alone; never a 500.
        assert [r.status_code for r in answers] == [401, 401, 401, 401, 429, 429]
        assert kind(answers[-1]) == "too-many-requests"
        assert answers[-1].headers["content-type"] == "application/problem+json"
        assert await metric(client, "user_service_shared_store_up") == 0
        assert await metric(client, "user_service_shared_store_errors_total", store="rate_limit") >= 1

        await redis_proxy.restore()
        # The probe pings every 2 s and ends the fallback as soon as Redis answers.
        await until_redis_answers(client)
        # Back on Redis, whose count for this address is where the outage left it (none):
        # a fresh budget in the shared store.
        assert (await login(client, name, "wrong-password-1")).status_code == 401


async def test_the_login_throttle_fails_over_to_postgresql(
    settings: Settings, redis_proxy: TcpProxy, redis_url: str, db_engine: AsyncEngine
) -> None:
    app_settings = outage_settings(settings, redis_proxy, rate_limits=False, throttle=True)
    async with serve(create_app(app_settings)) as first, serve(create_app(app_settings)) as second:
        name = unique_name()
        await register(first, name)
        await redis_proxy.cut()

        # Two replicas, Redis away: the free failures and the block are still shared,
        # through the database, and the right password is refused during the block.
        statuses = [
            (await replica.post(f"{AUTH}/login", json={"username": name, "password": "nope-nope-1"})).status_code
            for replica in (first, second, first)
        ]
        assert statuses == [401, 401, 401]
        blocked = await login(second, name)
        assert blocked.status_code == 429
        assert kind(blocked) == "login-throttled"
        assert int(blocked.headers["Retry-After"]) > 0
        async with db_engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM login_throttle"))).scalar_one() == 1
        assert await metric(first, "user_service_shared_store_errors_total", store="login_throttle") >= 1
        assert await metric(second, "user_service_shared_store_up") == 0

    # Nothing was written to Redis meanwhile.
    client = Redis.from_url(redis_url)
    assert [key async for key in client.scan_iter(match="user-service:login-throttle:*")] == []
    await client.aclose()


async def test_a_redis_that_never_answers_costs_a_request_at_most_a_moment(
    settings: Settings, redis_proxy: TcpProxy
) -> None:
    """A Redis address that accepts nothing (cut before the first request): logins are
    answered at once from the fallbacks, without waiting out a retry schedule."""
    await redis_proxy.cut()
    async with serve(create_app(outage_settings(settings, redis_proxy, rate_limits=True, throttle=True))) as client:
        name = unique_name()
        await register(client, name)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = [await login(client, name, "wrong-password-1") for _ in range(3)]
        elapsed = loop.time() - started
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert elapsed < 3.0


async def test_a_redis_that_accepts_but_never_answers_is_timed_out(settings: Settings) -> None:
    """A black hole (a half-dead host, a stuck Redis): connections open, replies never
    come. The 0.5 s timeout and the 5 s skip keep logins answered at once after the first."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    assert settings.tokens.signing_key_file is not None
    app_settings = make_settings(
        settings.db.url, settings.tokens.signing_key_file, rate_limits=LIMITS, login_throttle=THROTTLE
    ).model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{port}/0")})
    try:
        async with serve(create_app(app_settings)) as client:
            name = unique_name()
            await register(client, name)
            loop = asyncio.get_running_loop()
            timings, statuses = [], []
            for _ in range(4):
                started = loop.time()
                statuses.append((await login(client, name, "wrong-password-1")).status_code)
                timings.append(loop.time() - started)
            assert await metric(client, "user_service_shared_store_up") == 0
    finally:
        for writer in held:
            writer.transport.abort()
        hole.close()
    # Throttle (2 free failures, then a block) and rate limit still hold, from the fallbacks.
    assert statuses == [401, 401, 401, 429]
    assert timings[0] < 2.5, timings  # at most one timed-out attempt and its one retry
    assert max(timings[1:]) < 0.5, timings  # then Redis is skipped


async def test_a_check_reserved_in_redis_is_counted_in_postgresql_when_redis_goes_mid_hash(
    settings: Settings, redis_proxy: TcpProxy, redis_url: str, db_engine: AsyncEngine
) -> None:
    """The reservation is taken in Redis, Redis goes while the password hashes: the
    failure is still counted (in PostgreSQL), and the client gets its 401, not a 500."""
    assert settings.tokens.signing_key_file is not None
    slow = make_settings(
        settings.db.url,
        settings.tokens.signing_key_file,
        rate_limits={"enabled": False},
        login_throttle=THROTTLE,
        passwords={"time_cost": 4, "memory_cost_kib": 32_768},
    ).model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{redis_proxy.port}/0")})
    async with serve(create_app(slow)) as client:
        await until_redis_answers(client)
        attempt = asyncio.create_task(login(client, unique_name(), "wrong-password-1"))
        await asyncio.sleep(0.05)  # reserved (a few ms), now hashing (about 100 ms or more)
        await redis_proxy.cut()
        answer = await attempt
        assert answer.status_code == 401, answer.text
        assert await metric(client, "user_service_shared_store_errors_total", store="login_throttle") >= 1
    async with db_engine.connect() as conn:
        rows = (await conn.execute(text("SELECT failures, in_flight FROM login_throttle"))).all()
    assert [tuple(row) for row in rows] == [(1, 0)]
    # The reservation was Redis's (its in-flight mark is still there, to lapse with its
    # lease), so the count above is the settlement's fallback, not a reservation's.
    direct = Redis.from_url(redis_url)
    marks = [key async for key in direct.scan_iter(match="user-service:login-throttle:in-flight:*")]
    await direct.aclose()
    assert len(marks) == 1
