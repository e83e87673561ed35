"""Role changes over real HTTP take effect at once, for existing and new tokens; an admin
cannot demote or deactivate themselves."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import Client, assert_problem, login, make_user
from tests.integration.user_admin import (
    assert_page,
    assert_user,
    db_row,
    jwt_claims,
    list_users,
    new_user,
    patch_user,
    refresh,
)


async def test_promotion_applies_to_an_existing_access_token(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await make_user(client, db_engine)
    assert jwt_claims(target["tokens"]["access_token"])["role"] == "user"
    assert_problem(await list_users(client, target["headers"]), 403)

    response = await patch_user(client, admin["headers"], target["id"], {"role": "moderator"})

    assert response.status_code == 200, response.text
    assert assert_user(response.json())["role"] == "moderator"
    assert_page(await list_users(client, target["headers"]))


async def test_demotion_applies_to_an_existing_access_token(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await make_user(client, db_engine, role="moderator")
    assert_page(await list_users(client, target["headers"]))

    assert (await patch_user(client, admin["headers"], target["id"], {"role": "user"})).status_code == 200

    assert_problem(await list_users(client, target["headers"]), 403)


@pytest.mark.parametrize("how", ["login", "refresh"])
async def test_new_token_after_promotion_carries_the_new_role(client: Client, db_engine: AsyncEngine, how: str) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await make_user(client, db_engine)
    assert (await patch_user(client, admin["headers"], target["id"], {"role": "moderator"})).status_code == 200

    if how == "login":
        issued = await login(client, target["username"])
    else:
        issued = await refresh(client, target["tokens"]["refresh_token"])

    assert issued.status_code == 200, issued.text
    claims = jwt_claims(issued.json()["access_token"])
    assert claims["role"] == "moderator"
    assert claims["sub"] == target["id"]


@pytest.mark.parametrize(
    "change",
    [{"role": "user"}, {"role": "moderator"}, {"is_active": False}, {"role": "admin", "is_active": False}],
    ids=["demote-to-user", "demote-to-moderator", "deactivate", "deactivate-keeping-role"],
)
async def test_admin_cannot_demote_or_deactivate_themselves(
    client: Client, db_engine: AsyncEngine, change: dict[str, Any]
) -> None:
    admin = await make_user(client, db_engine, role="admin")

    assert_problem(await patch_user(client, admin["headers"], admin["id"], change), 403)

    assert await db_row(db_engine, admin["id"]) == {"role": "admin", "is_active": True, "deleted_at": None}
    assert_page(await list_users(client, admin["headers"]))


async def test_admin_may_promote_another_admin_and_demote_them(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    other = await new_user(client)

    promoted = await patch_user(client, admin["headers"], other["id"], {"role": "admin"})
    demoted = await patch_user(client, admin["headers"], other["id"], {"role": "user"})

    assert assert_user(promoted.json())["role"] == "admin"
    assert assert_user(demoted.json())["role"] == "user"
