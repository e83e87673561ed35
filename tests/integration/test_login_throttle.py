"""Per-account login throttling, through real HTTP on PostgreSQL (and Redis): free
attempts, then doubling blocks up to the cap, 429 with Retry-After, the same for unknown
names, cleared by success and by a password change, and shared by every replica."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.identity.throttle import (
    DatabaseThrottleStore,
    Outcome,
    RedisThrottleStore,
    ThrottleState,
    ThrottleStore,
    throttle_key,
)
from app.main import create_app
from app.settings import LoginThrottleSettings, Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, ME, PASSWORD, Client, bearer, login, register, unique_name

# Two free failures, then blocks of 1 s and 2 s (the cap): short enough to wait out.
FAST = {"free_attempts": 2, "base_delay_seconds": 1, "max_delay_seconds": 2}
THROTTLED_TYPE = "login-throttled"


def throttled_settings(settings: Settings, **throttle: Any) -> Settings:
    assert settings.tokens.signing_key_file is not None
    return make_settings(settings.db.url, settings.tokens.signing_key_file, login_throttle=throttle)


@pytest.fixture
async def throttled(settings: Settings) -> AsyncIterator[Client]:
    async with serve(create_app(throttled_settings(settings, **FAST))) as client:
        yield client


def _is_throttled(response: Any) -> bool:
    return response.status_code == 429 and str(response.json()["type"]).endswith(THROTTLED_TYPE)


async def _fail(client: Client, name: str, times: int) -> list[int]:
    return [(await login(client, name, "not-the-password-1")).status_code for _ in range(times)]


async def test_free_attempts_then_429_with_retry_after_even_for_the_right_password(throttled: Client) -> None:
    name = unique_name()
    await register(throttled, name)

    # Two free failures; the third fails too and starts a 1 s block.
    assert await _fail(throttled, name, 3) == [401, 401, 401]

    blocked = await login(throttled, name)  # the right password, during the block
    assert _is_throttled(blocked)
    assert blocked.headers["content-type"].startswith("application/problem+json")
    assert blocked.headers["Retry-After"] == "1"
    assert "access_token" not in blocked.text

    await asyncio.sleep(1.1)
    assert (await login(throttled, name)).status_code == 200
    # Success cleared the count: the next failure is free again, not a longer block.
    assert await _fail(throttled, name, 1) == [401]
    assert (await login(throttled, name)).status_code == 200


async def test_blocks_double_and_never_exceed_the_cap(throttled: Client) -> None:
    name = unique_name()
    await register(throttled, name)
    waits = []
    for _ in range(4):
        await _fail(throttled, name, 1)
        response = await login(throttled, name, "not-the-password-1")
        if _is_throttled(response):
            retry_after = int(response.headers["Retry-After"])
            waits.append(retry_after)
            await asyncio.sleep(retry_after + 0.1)
    # Failures 3, 4, 5... block for 1, 2, 2, 2 s: doubling, capped at max_delay_seconds.
    assert waits, "the throttle never engaged"
    assert max(waits) <= FAST["max_delay_seconds"]
    assert waits[-1] == FAST["max_delay_seconds"]


async def test_an_unknown_name_is_throttled_exactly_like_a_real_one(throttled: Client) -> None:
    real, unknown = unique_name(), unique_name("ghost")
    await register(throttled, real)

    def shape(response: Any) -> tuple[int, str | None, str]:
        body = response.json()
        return response.status_code, response.headers.get("Retry-After"), body["type"]

    real_story = [shape(await login(throttled, real, "not-the-password-1")) for _ in range(4)]
    unknown_story = [shape(await login(throttled, unknown, "not-the-password-1")) for _ in range(4)]
    assert real_story == unknown_story
    assert real_story[-1][0] == 429


async def test_concurrent_logins_with_the_right_password_are_never_throttled(throttled: Client) -> None:
    """A person on many devices at once, or a service account on many pods: twenty
    simultaneous good logins are twenty sessions, not a burst of guesses."""
    name = unique_name()
    await register(throttled, name)
    answers = await asyncio.gather(*(login(throttled, name) for _ in range(20)))
    assert [a.status_code for a in answers] == [200] * 20


async def test_continuous_concurrent_logins_with_the_right_password_are_never_throttled(settings: Settings) -> None:
    """A benchmark's shape: 8 connections logging in to one account over and over. Beyond
    the free checks they take turns, first come first served; none waits out the wait and
    gets a 429 (fresh attempts used to win the freed slots over the waiting ones)."""
    app = create_app(throttled_settings(settings, **FAST, wait_seconds=1.0))
    async with serve(app) as client:
        name = unique_name()
        await register(client, name)
        statuses: list[int] = []
        stop_at = asyncio.get_running_loop().time() + 3.0

        async def keep_logging_in() -> None:
            while asyncio.get_running_loop().time() < stop_at:
                statuses.append((await login(client, name)).status_code)

        await asyncio.gather(*(keep_logging_in() for _ in range(8)))
    assert len(statuses) > 8
    assert set(statuses) == {200}, sorted(statuses)


async def test_a_burst_of_concurrent_guesses_is_counted_in_full(throttled: Client) -> None:
    """Guesses in flight together all finish (the bound is the hashing pool and queue),
    but every failure counts: the name is blocked afterwards, capped as always."""
    name = unique_name()
    await register(throttled, name)
    answers = await asyncio.gather(*(login(throttled, name, "not-the-password-1") for _ in range(20)))
    assert {a.status_code for a in answers} <= {401, 429}
    blocked = await login(throttled, name)
    assert _is_throttled(blocked)
    assert int(blocked.headers["Retry-After"]) <= FAST["max_delay_seconds"]


async def test_names_are_throttled_case_insensitively(throttled: Client) -> None:
    name = unique_name("casey")
    await register(throttled, name)
    await _fail(throttled, name.upper(), 3)
    assert _is_throttled(await login(throttled, name))


async def test_every_spelling_of_an_email_shares_one_budget(throttled: Client) -> None:
    # Finding 4 of #12: the throttle counts an email by its key, so "boss@", "BOSS@" and
    # "boß@" are not three budgets for one account; a password change clears the key's.
    name = unique_name("boss")
    await register(throttled, name, email=f"{name}@example.com")
    sharp_s = name.replace("ss", "\u00df") + "@example.com"
    tokens = (await login(throttled, name)).json()
    await _fail(throttled, f"{name.upper()}@example.com", 1)
    await _fail(throttled, sharp_s, 2)
    assert _is_throttled(await login(throttled, f"{name}@EXAMPLE.com"))

    new_password = "amber-lantern-92-meadow"
    changed = await throttled.put(
        f"{ME}/password", json={"current_password": PASSWORD, "new_password": new_password}, headers=bearer(tokens)
    )
    assert changed.status_code == 204
    assert (await login(throttled, sharp_s, new_password)).status_code == 200


async def test_a_password_change_ends_the_throttle_on_the_username_and_the_email(throttled: Client) -> None:
    name = unique_name()
    await register(throttled, name)
    tokens = (await login(throttled, name)).json()  # the owner, logged in on another device
    await _fail(throttled, name, 3)
    await _fail(throttled, f"{name}@example.com", 3)
    assert _is_throttled(await login(throttled, name))

    new_password = "amber-lantern-92-meadow"
    changed = await throttled.put(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=bearer(tokens),
    )
    assert changed.status_code == 204
    assert (await login(throttled, name, new_password)).status_code == 200
    assert (await login(throttled, f"{name}@example.com", new_password)).status_code == 200


async def test_throttled_logins_cost_no_hash_and_are_counted(throttled: Client) -> None:
    name = unique_name()
    await throttled.post(f"{AUTH}/register", json={"username": name, "email": f"{name}@x.org", "password": PASSWORD})
    await _fail(throttled, name, 3)
    before = await throttled.get("/metrics")
    hashes_before = _metric(before.text, 'user_service_password_hash_duration_seconds_count{operation="verify"}')
    for _ in range(5):
        assert _is_throttled(await login(throttled, name))
    after = (await throttled.get("/metrics")).text
    assert _metric(after, 'user_service_password_hash_duration_seconds_count{operation="verify"}') == hashes_before
    assert _metric(after, 'user_service_login_attempts_total{result="throttled"}') == 5
    assert _metric(after, "user_service_login_throttle_blocks_total") >= 1


def _metric(exposition: str, series: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


async def test_every_replica_sees_the_throttle(settings: Settings) -> None:
    """Two apps on one database: failures against one block the name on the other."""
    replica_settings = throttled_settings(settings, **FAST)
    async with serve(create_app(replica_settings)) as first, serve(create_app(replica_settings)) as second:
        name = unique_name()
        await register(first, name)
        await _fail(first, name, 3)
        assert _is_throttled(await login(second, name))


async def test_with_redis_every_replica_sees_the_throttle_and_the_database_is_untouched(
    settings: Settings, redis_url: str, db_engine: AsyncEngine
) -> None:
    base = throttled_settings(settings, **FAST)
    replica_settings = base.model_copy(update={"redis_url": SecretStr(redis_url)})
    async with serve(create_app(replica_settings)) as first, serve(create_app(replica_settings)) as second:
        name = unique_name()
        await register(first, name)
        await _fail(first, name, 3)
        blocked = await login(second, name)
        assert _is_throttled(blocked)
        assert blocked.headers["Retry-After"] == "1"
    async with db_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM login_throttle"))).scalar_one() == 0


async def test_the_throttle_can_be_turned_off(settings: Settings) -> None:
    async with serve(create_app(throttled_settings(settings, **FAST, enabled=False))) as client:
        name = unique_name()
        await register(client, name)
        assert await _fail(client, name, 6) == [401] * 6
        assert (await login(client, name)).status_code == 200


# --- the stores, directly: the same contract on PostgreSQL and Redis --------------------


StoreFactory = Callable[[LoginThrottleSettings], ThrottleStore]


@pytest.fixture(params=["database", "redis"])
async def make_store(request: pytest.FixtureRequest, db_engine: AsyncEngine) -> AsyncIterator[StoreFactory]:
    if request.param == "database":
        yield lambda throttle: DatabaseThrottleStore(db_engine, throttle)
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    yield lambda throttle: RedisThrottleStore(redis, throttle)
    await redis.aclose()


NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


async def test_store_counts_every_checked_failure(make_store: StoreFactory) -> None:
    """Forty checks settled as failures at once (as from many replicas): every one is
    counted, blocks or not."""
    store = make_store(LoginThrottleSettings(free_attempts=100))
    key = throttle_key("target")
    await asyncio.gather(*(store.settle(key, NOW, Outcome.FAILED) for _ in range(40)))
    assert (await store.state(key, NOW)).failures == 40


async def test_store_grants_the_free_checks_and_then_one_at_a_time(make_store: StoreFactory) -> None:
    """The reservation is one atomic step: of forty at once, only the free checks are
    granted; once they are used, one check at a time, and none while a block runs."""
    store = make_store(LoginThrottleSettings(free_attempts=3, base_delay_seconds=60, max_delay_seconds=60))
    key = throttle_key("burst")
    burst = await asyncio.gather(*(store.reserve(key, NOW) for _ in range(40)))
    assert sum(r.granted for r in burst) == 3
    assert not any(r.blocked for r in burst)  # busy, not blocked: they may wait
    for _ in range(3):
        await store.settle(key, NOW, Outcome.FAILED)
    # Three failures, no block yet (the free ones): exactly one more check at a time.
    second = await asyncio.gather(*(store.reserve(key, NOW) for _ in range(40)))
    assert sum(r.granted for r in second) == 1
    counted = await store.settle(key, NOW, Outcome.FAILED)
    assert (counted.failures, counted.block_seconds) == (4, 60)
    third = await asyncio.gather(*(store.reserve(key, NOW) for _ in range(10)))
    assert not any(r.granted for r in third)
    assert all(r.retry_after_seconds == 60 for r in third)


async def test_store_success_frees_the_subject_and_leaves_nothing_behind(make_store: StoreFactory) -> None:
    store = make_store(LoginThrottleSettings(free_attempts=1, base_delay_seconds=30, max_delay_seconds=60))
    key = throttle_key("someone")
    assert (await store.reserve(key, NOW)).granted
    first = await store.settle(key, NOW, Outcome.FAILED)
    assert (first.failures, first.block_seconds) == (1, 0)
    assert (await store.reserve(key, NOW)).granted
    second = await store.settle(key, NOW, Outcome.FAILED)
    assert (second.failures, second.block_seconds) == (2, 30)
    state = await store.state(key, NOW)
    assert state.blocked
    assert 0 < state.retry_after_seconds <= 30
    refused = await store.reserve(key, NOW)
    assert (refused.granted, refused.failures) == (False, 2)  # a refusal is not counted
    await store.clear(key)
    assert (await store.reserve(key, NOW)).granted
    await store.settle(key, NOW, Outcome.SUCCEEDED)
    assert await store.state(key, NOW) == ThrottleState(failures=0, retry_after_seconds=0, in_flight=0)


async def test_store_abandoned_checks_free_their_slot_without_counting(make_store: StoreFactory) -> None:
    store = make_store(LoginThrottleSettings(free_attempts=1))
    key = throttle_key("shed")
    assert (await store.reserve(key, NOW)).granted
    assert not (await store.reserve(key, NOW)).granted  # one in flight: the free slot is taken
    await store.settle(key, NOW, Outcome.ABANDONED)
    assert (await store.reserve(key, NOW)).granted
    assert (await store.state(key, NOW)).failures == 0


async def test_database_store_a_dead_replicas_reservation_lapses(db_engine: AsyncEngine) -> None:
    """A replica that dies mid-check never settles: its lease runs out and frees the name."""
    store = DatabaseThrottleStore(db_engine, LoginThrottleSettings(free_attempts=1, check_lease_seconds=30))
    key = throttle_key("orphan")
    assert (await store.reserve(key, NOW)).granted
    assert not (await store.reserve(key, NOW + dt.timedelta(seconds=29))).granted
    assert (await store.reserve(key, NOW + dt.timedelta(seconds=31))).granted


async def test_database_store_forgets_old_failures(db_engine: AsyncEngine) -> None:
    policy = LoginThrottleSettings(free_attempts=2, forget_after_seconds=60)
    store = DatabaseThrottleStore(db_engine, policy)
    key = throttle_key("old-mistakes")
    for _ in range(2):
        await store.settle(key, NOW, Outcome.FAILED)
    later = NOW + dt.timedelta(seconds=61)
    assert (await store.state(key, later)).failures == 0
    # The next failure starts the count again instead of blocking.
    assert (await store.settle(key, later, Outcome.FAILED)).failures == 1
    assert await store.forget_stale(later + dt.timedelta(seconds=61)) == 1


async def test_logins_waiting_for_one_names_turn_do_not_keep_other_logins_out(settings: Settings) -> None:
    """The edge sheds a login while the hashing pool and queue are taken (app/web/
    shedding.py), counting the logins in flight. Logins queued in one name's line wait for
    their turn, not for a hash: counted, a burst on one name (here three times the pool's
    capacity of 2) would shed every other user's login while the pool stood half idle."""
    assert settings.tokens.signing_key_file is not None
    small_pool = make_settings(
        settings.db.url,
        settings.tokens.signing_key_file,
        login_throttle={**FAST, "free_attempts": 1},
        passwords={"pool_size": 1, "queue_size": 1, "time_cost": 3, "memory_cost_kib": 32_768},
    )
    async with serve(create_app(small_pool)) as client:
        crowded, other = unique_name("crowded"), unique_name("other")
        await register(client, crowded)
        await register(client, other)
        burst = [asyncio.ensure_future(login(client, crowded, "not-the-password-1")) for _ in range(6)]
        await asyncio.sleep(0.05)  # the burst is in: one check running, the rest in the line
        assert (await login(client, other)).status_code == 200
        answers = await asyncio.gather(*burst)
    # Each of the burst got an answer a client understands; a guess whose turn came while
    # the other user's login held the pool was shed, as any would be.
    assert {a.status_code for a in answers} <= {401, 429, 503}
