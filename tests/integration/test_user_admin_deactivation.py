"""Deactivating a user over real HTTP: its tokens stop working at once, its login looks
like a wrong password, it stays readable and listed, and reactivation needs a new login."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import ME, Client, assert_problem, bearer, login, make_user
from tests.integration.user_admin import (
    Account,
    assert_page,
    assert_user,
    ids,
    list_users,
    new_user,
    patch_user,
    refresh,
    user_url,
)


async def deactivate_as(client: Client, db: AsyncEngine, actor_role: str = "admin") -> tuple[Account, Account]:
    """An actor and a logged-in user the actor has just deactivated (tokens issued before)."""
    actor = await make_user(client, db, role=actor_role)
    target = await make_user(client, db)
    response = await patch_user(client, actor["headers"], target["id"], {"is_active": False})
    assert response.status_code == 200, response.text
    assert assert_user(response.json())["is_active"] is False
    return actor, target


@pytest.mark.parametrize("actor_role", ["admin", "moderator"])
async def test_deactivation_kills_the_refresh_token_at_once(
    client: Client, db_engine: AsyncEngine, actor_role: str
) -> None:
    _, target = await deactivate_as(client, db_engine, actor_role)

    assert_problem(await refresh(client, target["tokens"]["refresh_token"]), 401)


@pytest.mark.parametrize("actor_role", ["admin", "moderator"])
async def test_deactivation_kills_the_access_token_at_once(
    client: Client, db_engine: AsyncEngine, actor_role: str
) -> None:
    _, target = await deactivate_as(client, db_engine, actor_role)

    assert_problem(await client.get(ME, headers=target["headers"]), 401)


async def test_deactivated_user_login_looks_like_a_wrong_password(client: Client, db_engine: AsyncEngine) -> None:
    _, target = await deactivate_as(client, db_engine)
    bystander = await new_user(client)

    inactive_login = await login(client, target["username"])
    wrong_password = await login(client, bystander["username"], "not-the-password-at-all")

    assert_problem(inactive_login, 401)
    assert inactive_login.json() == assert_problem(wrong_password, 401)


async def test_deactivated_user_is_still_readable_and_listed(client: Client, db_engine: AsyncEngine) -> None:
    admin, target = await deactivate_as(client, db_engine)

    one = await client.get(user_url(target["id"]), headers=admin["headers"])
    page = assert_page(await list_users(client, admin["headers"], is_active="false"))

    assert one.status_code == 200
    assert assert_user(one.json())["is_active"] is False
    assert ids(page) == [target["id"]]
    assert target["id"] in ids(assert_page(await list_users(client, admin["headers"])))


async def test_reactivation_lets_the_user_log_in_again(client: Client, db_engine: AsyncEngine) -> None:
    admin, target = await deactivate_as(client, db_engine)

    response = await patch_user(client, admin["headers"], target["id"], {"is_active": True})

    assert response.status_code == 200, response.text
    assert assert_user(response.json())["is_active"] is True
    relogin = await login(client, target["username"])
    assert relogin.status_code == 200, relogin.text
    me = await client.get(ME, headers=bearer(relogin.json()))
    assert me.status_code == 200
    assert assert_user(me.json())["id"] == target["id"]


async def test_reactivation_does_not_revive_the_old_sessions(client: Client, db_engine: AsyncEngine) -> None:
    admin, target = await deactivate_as(client, db_engine)

    assert (await patch_user(client, admin["headers"], target["id"], {"is_active": True})).status_code == 200

    assert_problem(await client.get(ME, headers=target["headers"]), 401)
    assert_problem(await refresh(client, target["tokens"]["refresh_token"]), 401)
