"""Reading one user over real HTTP: exactly the User fields of docs/api.md, 404 problem details
for an unknown id, and no response that leaks a password hash."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import ME, Client, assert_problem, make_user
from tests.integration.user_admin import assert_user, list_users, new_user, patch_user, user_url


@pytest.mark.parametrize("actor_role", ["admin", "moderator"])
async def test_get_one_user_returns_exactly_the_user_fields(
    client: Client, db_engine: AsyncEngine, actor_role: str
) -> None:
    actor = await make_user(client, db_engine, role=actor_role)
    target = await new_user(client, full_name="Grace Hopper")

    response = await client.get(user_url(target["id"]), headers=actor["headers"])

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert assert_user(response.json()) == target


async def test_get_unknown_uuid_answers_404_problem(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")

    body = assert_problem(await client.get(user_url(str(uuid.uuid4())), headers=admin["headers"]), 404)

    assert "errors" not in body


async def test_no_admin_response_leaks_a_hash(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await new_user(client)
    responses = [
        await list_users(client, admin["headers"]),
        await client.get(user_url(target["id"]), headers=admin["headers"]),
        await patch_user(client, admin["headers"], target["id"], {"is_active": False}),
        await patch_user(client, admin["headers"], target["id"], {"role": "moderator"}),
        await client.get(ME, headers=admin["headers"]),
    ]

    for response in responses:
        assert response.status_code == 200, response.text
        assert "password" not in response.text
        assert "argon2" not in response.text
        assert "deleted_at" not in response.text
