"""POST /refresh and /logout: rotation, families, reuse detection, revocation."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import AUTH, ME, Client, assert_problem, bearer, login, register


async def signed_in(client: Client, username: str) -> dict[str, Any]:
    await register(client, username)
    tokens: dict[str, Any] = (await login(client, username)).json()
    return tokens


async def refresh(client: Client, token: str) -> Any:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_spends_the_old_token(client: Client) -> None:
    first = await signed_in(client, "rotator")
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await client.get(ME, headers=bearer(second))).status_code == 200
    # The successor rotates again, and so on: a chain, one link at a time.
    third = (await refresh(client, second["refresh_token"])).json()
    assert (await refresh(client, third["refresh_token"])).status_code == 200


async def test_reusing_a_spent_token_revokes_the_whole_family(client: Client, db_engine: AsyncEngine) -> None:
    first = await signed_in(client, "victim")
    other_device = (await login(client, "victim")).json()
    second = (await refresh(client, first["refresh_token"])).json()

    # An attacker replays the stolen, already-spent token.
    assert_problem(await refresh(client, first["refresh_token"]), 401)

    # The legitimate successor and its access token die with the family...
    assert_problem(await refresh(client, second["refresh_token"]), 401)
    assert_problem(await client.get(ME, headers=bearer(second)), 401)
    # ...but another login session of the same user is untouched.
    assert (await client.get(ME, headers=bearer(other_device))).status_code == 200
    assert (await refresh(client, other_device["refresh_token"])).status_code == 200
    async with db_engine.connect() as conn:
        reasons = (
            await conn.execute(text("SELECT revoked_reason FROM auth_sessions WHERE revoked_at IS NOT NULL"))
        ).all()
    assert [r.revoked_reason for r in reasons] == ["refresh_reuse"]


async def test_unknown_and_garbage_tokens_are_401(client: Client) -> None:
    for token in ["", "x", "a" * 43, "../../etc/passwd"]:
        assert_problem(await refresh(client, token), 401)


async def test_expired_refresh_token_is_401(client: Client, db_engine: AsyncEngine) -> None:
    tokens = await signed_in(client, "expiring")
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'"))
    assert_problem(await refresh(client, tokens["refresh_token"]), 401)


async def test_the_same_body_for_every_refused_refresh(client: Client, db_engine: AsyncEngine) -> None:
    tokens = await signed_in(client, "uniform")
    await refresh(client, tokens["refresh_token"])
    reused = assert_problem(await refresh(client, tokens["refresh_token"]), 401)
    unknown = assert_problem(await refresh(client, "never-issued-token"), 401)
    assert reused == unknown


async def test_concurrent_double_spend_yields_exactly_one_success(client: Client) -> None:
    tokens = await signed_in(client, "double_spender")
    responses = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(2)))
    assert sorted(r.status_code for r in responses) == [200, 401]


async def test_logout_ends_the_session_and_its_access_token(client: Client) -> None:
    tokens = await signed_in(client, "leaver")
    other = (await login(client, "leaver")).json()
    response = await client.post(f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await refresh(client, tokens["refresh_token"]), 401)
    assert_problem(await client.get(ME, headers=bearer(tokens)), 401)
    assert (await client.get(ME, headers=bearer(other))).status_code == 200


async def test_a_replayed_logout_is_204_and_written_once(client: Client) -> None:
    tokens = await signed_in(client, "repeater")
    other = (await login(client, "repeater")).json()
    for _ in range(3):
        response = await client.post(f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]})
        assert response.status_code == 204
    events = (await client.get(f"{ME}/events", headers=bearer(other))).json()["items"]
    assert [event["type"] for event in events].count("logged_out") == 1


async def test_logout_with_an_unknown_token_is_still_204(client: Client) -> None:
    response = await client.post(f"{AUTH}/logout", json={"refresh_token": "no-such-token"})
    assert response.status_code == 204


async def test_logout_without_a_token_field_is_422(client: Client) -> None:
    assert_problem(await client.post(f"{AUTH}/logout", json={}), 422)


async def test_deactivated_users_refresh_tokens_stop_working_at_once(client: Client, db_engine: AsyncEngine) -> None:
    tokens = await signed_in(client, "suspended")
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE users SET is_active = false WHERE username = 'suspended'"))
    assert_problem(await refresh(client, tokens["refresh_token"]), 401)
    assert_problem(await client.get(ME, headers=bearer(tokens)), 401)


async def test_refresh_tokens_are_stored_only_as_sha256(client: Client, db_engine: AsyncEngine) -> None:
    tokens = await signed_in(client, "stored")
    async with db_engine.connect() as conn:
        stored = (await conn.execute(text("SELECT token_hash FROM refresh_tokens"))).scalars().all()
    assert len(stored) == 1
    assert tokens["refresh_token"] not in stored[0]
    assert len(stored[0]) == 64
