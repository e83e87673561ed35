"""PUT /users/me/password checks the current password: with a stolen access token it
must be no better an oracle than the login form (issue 12, finding 2). Throttled per
account like a login, rate-limited per account, counted, and unable to starve the
hashing pool that logins need."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import ME, PASSWORD, Client, bearer, login, register, unique_name
from tests.integration.test_login_throttle import FAST, throttled_settings

NEW_PASSWORD = "amber-lantern-92-meadow"


async def _signed_in(client: Client) -> dict[str, str]:
    name = unique_name()
    await register(client, name)
    return bearer((await login(client, name)).json())


async def _change(client: Client, auth: dict[str, str], current: str) -> Any:
    body = {"current_password": current, "new_password": NEW_PASSWORD}
    return await client.put(f"{ME}/password", json=body, headers=auth)


def _series(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def _checks(exposition: str, result: str) -> float:
    return _series(exposition, f'user_service_password_checks_total{{purpose="password_change",result="{result}"}}')


async def test_wrong_current_passwords_are_throttled_like_logins_and_counted(settings: Settings) -> None:
    async with serve(create_app(throttled_settings(settings, **FAST))) as client:
        auth = await _signed_in(client)
        wrong = [await _change(client, auth, f"guess-number-{i}") for i in range(FAST["free_attempts"] + 1)]
        assert [r.status_code for r in wrong] == [400] * (FAST["free_attempts"] + 1)

        # The last wrong guess started a block: even the right password waits it out.
        blocked = await _change(client, auth, PASSWORD)
        assert blocked.status_code == 429
        assert blocked.json()["type"].endswith("password-checks-throttled")
        assert blocked.headers["Retry-After"] == "1"

        metrics = (await client.get("/metrics")).text
        assert _checks(metrics, "failed") == FAST["free_attempts"] + 1
        assert _checks(metrics, "throttled") == 1

        await asyncio.sleep(1.1)
        assert (await _change(client, auth, PASSWORD)).status_code == 204
        assert _checks((await client.get("/metrics")).text, "success") == 1


async def test_a_concurrent_burst_of_wrong_passwords_gets_few_checks_and_leaves_logins_alone(
    settings: Settings,
) -> None:
    """45 wrong tries at once used to be 45 verified guesses, and they filled the hashing
    pool so that an unrelated login got 503. Now the account gets its free checks and one
    more; the rest are refused before any hash, and the other user logs in."""
    async with serve(create_app(throttled_settings(settings, **FAST))) as client:
        auth = await _signed_in(client)
        bystander = unique_name("bystander")
        await register(client, bystander)
        burst = [_change(client, auth, f"guess-{i}") for i in range(45)]
        *answers, bystander_login = await asyncio.gather(*burst, login(client, bystander))
        statuses = Counter(a.status_code for a in answers)
        assert statuses[400] == FAST["free_attempts"] + 1, statuses
        assert statuses[429] == 45 - statuses[400], statuses
        assert bystander_login.status_code == 200


async def test_password_checks_are_rate_limited_per_account(settings: Settings) -> None:
    assert settings.tokens.signing_key_file is not None
    limited = make_settings(
        settings.db.url,
        settings.tokens.signing_key_file,
        rate_limits={"enabled": True, "password_check": "3/minute"},
        login_throttle={"enabled": False},  # the rate limit alone, here
    )
    async with serve(create_app(limited)) as client:
        auth, other = await _signed_in(client), await _signed_in(client)
        answers = [await _change(client, auth, f"guess-{i}") for i in range(4)]
        assert [a.status_code for a in answers] == [400, 400, 400, 429]
        assert answers[-1].json()["type"].endswith("too-many-requests")
        # Per account, not per address: another account from the same address goes on.
        assert (await _change(client, other, PASSWORD)).status_code == 204
        metrics = (await client.get("/metrics")).text
        assert _series(metrics, 'user_service_rate_limited_total{route="password_check"}') == 1
