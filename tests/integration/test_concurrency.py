"""Races on one account, run many times over on a real server and PostgreSQL: a password
change against logins and refreshes, many clients spending one refresh token, a logout
against a refresh, a password change against a deactivation.

The service runs in the test's event loop behind a real uvicorn (testkit/live_server.py), so
the requests below really overlap; argon2 is made slow enough (a few milliseconds) that
a login's verify spans the password change's commit, which is where a race would be.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from testkit.live_server import LiveClient, serve
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, ME, PASSWORD, Client, bearer, login, register, unique_name

NEW_PASSWORD = "cobalt-orchard-62-lantern"
ROUNDS = 20
# A verify of a few milliseconds, so that logins are in flight across the change's commit;
# four hashing threads, so that the pool does not serialise the race away.
RACY_HASHING = {"time_cost": 1, "memory_cost_kib": 4096, "pool_size": 4, "queue_size": 256}


@pytest.fixture
async def racy_client(clean_database: str, signing_key_file: Path, db_engine: AsyncEngine) -> AsyncIterator[LiveClient]:
    # The account throttle off: the old password failing after each change is the point
    # here, and a 429 in its place would hide what the login did.
    settings = make_settings(
        clean_database, signing_key_file, passwords=RACY_HASHING, login_throttle={"enabled": False}
    )
    async with serve(create_app(settings)) as client:
        yield client


async def refresh(client: Client, token: str) -> httpx.Response:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


async def change_password(client: Client, tokens: dict[str, Any]) -> httpx.Response:
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    return await client.put(f"{ME}/password", json=body, headers=bearer(tokens))


async def after(delay: float, request: Awaitable[httpx.Response]) -> httpx.Response:
    await asyncio.sleep(delay)
    return await request


async def is_alive(client: Client, tokens: dict[str, Any]) -> bool:
    """A session survives if either of its tokens still works."""
    me = await client.get(ME, headers=bearer(tokens))
    if me.status_code == 200:
        return True
    assert me.status_code == 401, me.text
    rotated = await refresh(client, tokens["refresh_token"])
    assert rotated.status_code in {200, 401}, rotated.text
    return rotated.status_code == 200


async def _one_change_racing_logins(client: Client, login_seconds: float) -> list[str]:
    """One round; returns what went wrong (nothing, if the service holds)."""
    username = unique_name("racer")
    assert (await register(client, username)).status_code == 201
    changer = (await login(client, username)).json()
    bystander = (await login(client, username)).json()  # another device, old password
    # Logins with the old password start across the whole change (verify current, hash
    # new, write): those that read the old hash before the change commits and write their
    # session after it are the race.
    spread = [i * login_seconds / 2 for i in range(8)]
    change, bystander_refresh, *logins = await asyncio.gather(
        change_password(client, changer),
        refresh(client, bystander["refresh_token"]),
        *(after(delay, login(client, username)) for delay in spread),
    )
    assert change.status_code == 204, change.text
    old_password_sessions = [bystander] + [r.json() for r in logins if r.status_code == 200]
    if bystander_refresh.status_code == 200:
        old_password_sessions.append(bystander_refresh.json())
    assert all(r.status_code in {200, 401} for r in logins), [r.text for r in logins]
    alive = [await is_alive(client, tokens) for tokens in old_password_sessions]
    problems = ["a session opened with the old password survived the change"] * sum(alive)
    late = await login(client, username)  # after the 204: the old password is gone
    if late.status_code != 401:
        problems.append("the old password logged in after the change's 204")
    assert (await login(client, username, NEW_PASSWORD)).status_code == 200
    assert await is_alive(client, changer), "the session that changed the password must stay"
    return problems


async def _login_seconds(client: Client) -> float:
    username = unique_name("timer")
    await register(client, username)
    started = time.perf_counter()
    for _ in range(5):
        await login(client, username)
    return (time.perf_counter() - started) / 5


@pytest.mark.slow
async def test_no_session_opened_with_the_old_password_survives_a_password_change(racy_client: LiveClient) -> None:
    login_seconds = await _login_seconds(racy_client)
    problems: Counter[str] = Counter()
    for _ in range(ROUNDS):
        problems.update(await _one_change_racing_logins(racy_client, login_seconds))
    if problems:
        raise AssertionError(f"in {ROUNDS} rounds (a login took {login_seconds * 1000:.0f} ms): {dict(problems)}")


async def _family_tokens(db: AsyncEngine, access_token_owner: str) -> list[Any]:
    async with db.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT t.spent_at, s.revoked_reason FROM refresh_tokens t"
                " JOIN auth_sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id"
                " WHERE u.username = :u"
            ),
            {"u": access_token_owner},
        )
        return list(result.all())


@pytest.mark.slow
async def test_many_clients_spending_one_refresh_token_get_exactly_one_success(
    racy_client: LiveClient, db_engine: AsyncEngine
) -> None:
    clients = 12
    for _ in range(ROUNDS):
        username = unique_name("spender")
        await register(racy_client, username)
        tokens = (await login(racy_client, username)).json()
        other_device = (await login(racy_client, username)).json()
        responses = await asyncio.gather(*(refresh(racy_client, tokens["refresh_token"]) for _ in range(clients)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [401] * (clients - 1), statuses
        # The others are reuses of a spent token, which by design (docs/api.md) revokes the
        # family: the winner's new tokens die with it, and one successor was ever issued.
        (winner,) = [r.json() for r in responses if r.status_code == 200]
        assert not await is_alive(racy_client, winner)
        rows = await _family_tokens(db_engine, username)
        family = [row for row in rows if row.revoked_reason == "refresh_reuse"]
        assert len(family) == 2, rows  # the presented token and exactly one successor
        assert sum(row.spent_at is not None for row in family) == 1, rows
        # Another login session of the same user is not touched.
        assert await is_alive(racy_client, other_device)


@pytest.mark.slow
async def test_a_logout_racing_a_refresh_always_ends_the_session(racy_client: LiveClient) -> None:
    for _ in range(ROUNDS):
        username = unique_name("leaver")
        await register(racy_client, username)
        tokens = (await login(racy_client, username)).json()
        logout, rotated = await asyncio.gather(
            racy_client.post(f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]}),
            refresh(racy_client, tokens["refresh_token"]),
        )
        assert logout.status_code == 204
        assert rotated.status_code in {200, 401}
        assert not await is_alive(racy_client, tokens)
        if rotated.status_code == 200:
            # The refresh won the race, but the logout's 204 still ends the session.
            assert not await is_alive(racy_client, rotated.json())


@pytest.mark.slow
async def test_a_password_change_racing_a_deactivation_never_reactivates_the_account(
    racy_client: LiveClient, db_engine: AsyncEngine
) -> None:
    admin = unique_name("admin")
    await register(racy_client, admin)
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE users SET role = 'admin' WHERE username = :u"), {"u": admin})
    admin_headers = bearer((await login(racy_client, admin)).json())
    reactivated = []
    for _ in range(ROUNDS):
        username = unique_name("suspect")
        user = (await register(racy_client, username)).json()
        tokens = (await login(racy_client, username)).json()
        change, deactivation = await asyncio.gather(
            change_password(racy_client, tokens),
            after(
                0.002,
                racy_client.patch(f"/api/v1/users/{user['id']}", json={"is_active": False}, headers=admin_headers),
            ),
        )
        assert deactivation.status_code == 200, deactivation.text
        assert change.status_code in {204, 401}, change.text
        async with db_engine.connect() as conn:
            active = (
                await conn.execute(text("SELECT is_active FROM users WHERE username = :u"), {"u": username})
            ).scalar_one()
        if active:
            reactivated.append(username)
        assert (await login(racy_client, username, NEW_PASSWORD)).status_code == 401 or active
    assert reactivated == [], f"deactivated accounts active again after a concurrent password change: {reactivated}"
