"""How many password guesses an attacker gets verified per name, under a concurrent
attack, on one replica or several sharing the store (issue 12, finding 1). A guess
verified is a 401: the password was checked against the hash. The bound is the policy's
(``guesses_verified_bound``), whatever the number of connections or replicas."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from app.identity.throttle import guesses_verified_bound
from app.main import create_app
from app.settings import LoginThrottleSettings, Settings
from testkit.live_server import serve
from tests.integration.helpers import Client, login, register, unique_name
from tests.integration.test_login_throttle import FAST, THROTTLED_TYPE, throttled_settings

WRONG = "not-the-password-1"
POLICY = LoginThrottleSettings(**FAST)


async def test_a_concurrent_burst_gets_only_the_free_guesses_and_one_more_verified(settings: Settings) -> None:
    """28 wrong guesses at once on one name used to be 28 verified guesses (each 401);
    now the free ones run, then one more, and the rest learn of the block it started."""
    async with serve(create_app(throttled_settings(settings, **FAST))) as client:
        name = unique_name()
        await register(client, name)
        answers = await asyncio.gather(*(login(client, name, WRONG) for _ in range(28)))
        statuses = Counter(a.status_code for a in answers)
        assert statuses[401] == POLICY.free_attempts + 1, statuses
        assert statuses[429] == 28 - statuses[401]
        assert all(str(a.json()["type"]).endswith(THROTTLED_TYPE) for a in answers if a.status_code == 429)
        # The block the one extra guess started holds against the right password too.
        assert (await login(client, name)).status_code == 429


@contextlib.asynccontextmanager
async def _replicas(settings: Settings, count: int) -> AsyncIterator[list[Client]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve(create_app(settings))) for _ in range(count)]


async def _attack(replicas: list[Client], name: str, *, connections: int, seconds: float) -> Counter[int]:
    """``connections`` clients hammer one name, spread over the replicas, for ``seconds``:
    on a 429 they try again at once (an attacker ignores Retry-After)."""
    statuses: Counter[int] = Counter()
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds

    async def one(index: int) -> None:
        client = replicas[index % len(replicas)]
        while loop.time() < stop_at:
            response = await login(client, name, WRONG)
            statuses[response.status_code] += 1
            if response.status_code == 429:
                await asyncio.sleep(0.02)

    await asyncio.gather(*(one(i) for i in range(connections)))
    return statuses


ATTACK_SECONDS = 4.0


@pytest.mark.parametrize("replica_count", [1, 3])
@pytest.mark.parametrize("store", ["database", "redis"])
async def test_guesses_verified_per_name_stay_within_the_policy_bound(
    settings: Settings, request: pytest.FixtureRequest, replica_count: int, store: str
) -> None:
    replica_settings: Any = throttled_settings(settings, **FAST)
    if store == "redis":
        replica_settings = replica_settings.model_copy(
            update={"redis_url": SecretStr(request.getfixturevalue("redis_url"))}
        )
    async with _replicas(replica_settings, replica_count) as replicas:
        name = unique_name("target")
        await register(replicas[0], name)
        statuses = await _attack(replicas, name, connections=24, seconds=ATTACK_SECONDS)
    verified = statuses[401]
    # A guess that starts just before the end still finishes: allow one check's time.
    bound = guesses_verified_bound(POLICY, ATTACK_SECONDS + 0.5)
    assert POLICY.free_attempts + 1 <= verified <= bound, (statuses, bound)
    assert set(statuses) <= {401, 429}, statuses
