"""Deleting a user over real HTTP is a soft delete: the user is gone from the API, its
tokens and logins refused at once, its row kept, its name and email still taken."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import ME, Client, assert_problem, login, make_user, register, unique_name
from tests.integration.user_admin import (
    Account,
    assert_page,
    db_row,
    error_fields,
    ids,
    list_users,
    new_user,
    patch_user,
    refresh,
    user_url,
)


async def delete_as_admin(client: Client, db: AsyncEngine) -> tuple[Account, Account]:
    """An admin and a logged-in user the admin has just deleted (tokens issued before)."""
    admin = await make_user(client, db, role="admin")
    victim = await make_user(client, db)
    response = await client.delete(user_url(victim["id"]), headers=admin["headers"])
    assert response.status_code == 204, response.text
    assert response.content == b""
    return admin, victim


async def test_deleted_user_is_not_found_by_id(client: Client, db_engine: AsyncEngine) -> None:
    admin, victim = await delete_as_admin(client, db_engine)

    assert_problem(await client.get(user_url(victim["id"]), headers=admin["headers"]), 404)


async def test_deleted_user_is_not_listed_or_counted(client: Client, db_engine: AsyncEngine) -> None:
    admin, victim = await delete_as_admin(client, db_engine)

    page = assert_page(await list_users(client, admin["headers"]))
    filtered = assert_page(await list_users(client, admin["headers"], q=victim["username"]))
    inactive = assert_page(await list_users(client, admin["headers"], is_active="false"))

    assert ids(page) == [admin["id"]]
    assert page["total"] == 1
    assert filtered["total"] == 0
    assert inactive["total"] == 0


async def test_deleted_user_login_looks_like_a_wrong_password(client: Client, db_engine: AsyncEngine) -> None:
    _, victim = await delete_as_admin(client, db_engine)
    bystander = await new_user(client)

    deleted_login = await login(client, victim["username"])
    wrong_password = await login(client, bystander["username"], "not-the-password-at-all")

    assert_problem(deleted_login, 401)
    assert_problem(wrong_password, 401)
    assert deleted_login.json() == wrong_password.json()


async def test_deleted_user_refresh_token_is_refused(client: Client, db_engine: AsyncEngine) -> None:
    _, victim = await delete_as_admin(client, db_engine)

    assert_problem(await refresh(client, victim["tokens"]["refresh_token"]), 401)


async def test_deleted_user_access_token_is_refused_at_once(client: Client, db_engine: AsyncEngine) -> None:
    _, victim = await delete_as_admin(client, db_engine)

    response = await client.get(ME, headers=victim["headers"])

    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_deleted_user_row_stays_with_deleted_at(client: Client, db_engine: AsyncEngine) -> None:
    _, victim = await delete_as_admin(client, db_engine)

    row = await db_row(db_engine, victim["id"])

    assert row["deleted_at"] is not None
    assert row["is_active"] is False


@pytest.mark.parametrize("reused", ["username", "email", "username-other-case"])
async def test_deleted_user_name_and_email_cannot_be_registered_again(
    client: Client, db_engine: AsyncEngine, reused: str
) -> None:
    _, victim = await delete_as_admin(client, db_engine)
    fresh = unique_name("fresh")
    username, email, field = {
        "username": (victim["username"], f"{fresh}@example.com", "username"),
        "username-other-case": (victim["username"].upper(), f"{fresh}@example.com", "username"),
        "email": (fresh, victim["email"], "email"),
    }[reused]

    body = assert_problem(await register(client, username, email=email), 409)

    assert field in error_fields(body)


async def test_deleting_twice_answers_404(client: Client, db_engine: AsyncEngine) -> None:
    admin, victim = await delete_as_admin(client, db_engine)

    assert_problem(await client.delete(user_url(victim["id"]), headers=admin["headers"]), 404)


async def test_patching_a_deleted_user_answers_404(client: Client, db_engine: AsyncEngine) -> None:
    admin, victim = await delete_as_admin(client, db_engine)

    response = await patch_user(client, admin["headers"], victim["id"], {"is_active": True})

    assert_problem(response, 404)
    assert (await db_row(db_engine, victim["id"]))["is_active"] is False


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("path_id", ["unknown-uuid", "not-a-uuid", "12345"])
async def test_unknown_or_malformed_id_answers_404(
    client: Client, db_engine: AsyncEngine, method: str, path_id: str
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    user_id = str(uuid.uuid4()) if path_id == "unknown-uuid" else path_id
    body = {"is_active": False} if method == "PATCH" else None

    response = await client.request(method, user_url(user_id), headers=admin["headers"], json=body)

    assert_problem(response, 404)


async def test_admin_cannot_delete_themselves(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")

    assert_problem(await client.delete(user_url(admin["id"]), headers=admin["headers"]), 403)

    assert (await db_row(db_engine, admin["id"]))["deleted_at"] is None
    assert (await client.get(ME, headers=admin["headers"])).status_code == 200


async def test_delete_ends_only_the_deleted_users_sessions(client: Client, db_engine: AsyncEngine) -> None:
    admin, _ = await delete_as_admin(client, db_engine)
    bystander = await make_user(client, db_engine)

    assert (await client.get(ME, headers=admin["headers"])).status_code == 200
    assert (await client.get(ME, headers=bystander["headers"])).status_code == 200
    assert (await refresh(client, bystander["tokens"]["refresh_token"])).status_code == 200
