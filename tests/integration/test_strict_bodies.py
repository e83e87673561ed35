"""JSON bodies are typed strictly on every endpoint: a boolean is a JSON boolean, a string a
JSON string. Litestar converts bodies leniently by default ("false" and 0 became False), so
each case here is a value a lenient decoder would have taken; each must be a 422 problem
naming the field, and nothing may change."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import AUTH, ME, PASSWORD, Client, assert_problem, login, make_user, unique_name
from tests.integration.user_admin import db_row, error_fields, new_user, patch_user

# is_active as the lenient decoder would have read it: 0/"false" → False, 1/"true" → True.
LOOSE_BOOLEANS: list[tuple[str, Any]] = [
    ("zero", 0),
    ("one", 1),
    ("string-false", "false"),
    ("string-true", "true"),
    ("float", 0.0),
]


@pytest.mark.parametrize("value", [v for _, v in LOOSE_BOOLEANS], ids=[i for i, _ in LOOSE_BOOLEANS])
async def test_admin_patch_refuses_a_boolean_that_is_not_a_json_boolean(
    client: Client, db_engine: AsyncEngine, value: Any
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await new_user(client)

    problem = assert_problem(await patch_user(client, admin["headers"], target["id"], {"is_active": value}), 422)

    assert error_fields(problem) == ["is_active"]
    assert await db_row(db_engine, target["id"]) == {"role": "user", "is_active": True, "deleted_at": None}


async def test_admin_patch_refuses_a_role_that_is_not_a_json_string(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await new_user(client)

    for role in (1, ["admin"], {"name": "admin"}):
        problem = assert_problem(await patch_user(client, admin["headers"], target["id"], {"role": role}), 422)
        assert error_fields(problem) == ["role"]
    assert await db_row(db_engine, target["id"]) == {"role": "user", "is_active": True, "deleted_at": None}


REGISTRATIONS: list[tuple[str, str, Any]] = [
    ("username-number", "username", 123),
    ("username-boolean", "username", True),
    ("email-list", "email", ["a@example.com"]),
    ("password-boolean", "password", True),
    ("password-number", "password", 12345678),
    ("full-name-number", "full_name", 42),
    ("full-name-boolean", "full_name", False),
]


@pytest.mark.parametrize(("field", "value"), [r[1:] for r in REGISTRATIONS], ids=[r[0] for r in REGISTRATIONS])
async def test_register_refuses_wrong_json_types_and_creates_nothing(
    client: Client, db_engine: AsyncEngine, field: str, value: Any
) -> None:
    username = unique_name("strict")
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD, field: value}

    problem = assert_problem(await client.post(f"{AUTH}/register", json=body), 422)

    assert error_fields(problem) == [field]
    async with db_engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one()
    assert count == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/login", {"username": 123, "password": PASSWORD}, "username"),
        ("/login", {"username": "someone", "password": True}, "password"),
        ("/refresh", {"refresh_token": 1}, "refresh_token"),
        ("/logout", {"refresh_token": False}, "refresh_token"),
    ],
    ids=["login-username", "login-password", "refresh-token", "logout-token"],
)
async def test_auth_endpoints_refuse_wrong_json_types(
    client: Client, path: str, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await client.post(f"{AUTH}{path}", json=body), 422)

    assert error_fields(problem) == [field]


async def test_profile_and_password_changes_refuse_wrong_json_types_and_change_nothing(
    client: Client, db_engine: AsyncEngine
) -> None:
    user = await make_user(client, db_engine)
    before = (await client.get(ME, headers=user["headers"])).json()

    profile_changes: list[tuple[dict[str, Any], str]] = [({"full_name": 7}, "full_name"), ({"email": True}, "email")]
    for body, field in profile_changes:
        problem = assert_problem(await client.patch(ME, headers=user["headers"], json=body), 422)
        assert error_fields(problem) == [field]
    password_changes: list[tuple[dict[str, Any], str]] = [
        ({"current_password": True, "new_password": "another-long-passphrase"}, "current_password"),
        ({"current_password": PASSWORD, "new_password": 123456789}, "new_password"),
    ]
    for body, field in password_changes:
        problem = assert_problem(await client.put(f"{ME}/password", headers=user["headers"], json=body), 422)
        assert error_fields(problem) == [field]

    assert (await client.get(ME, headers=user["headers"])).json() == before
    assert (await login(client, user["username"])).status_code == 200  # the password is still the old one


async def test_a_body_typed_as_anything_but_json_is_415_and_does_nothing(
    client: Client, db_engine: AsyncEngine
) -> None:
    # What a form on any web site can make its visitors' browsers send without a preflight:
    # a JSON text typed text/plain (or a form's own types).
    def registration(name: str) -> str:
        return f'{{"username": "{name}", "email": "{name}@example.com", "password": "{PASSWORD}"}}'

    for media_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        name = unique_name("typed")
        response = await client.post(
            f"{AUTH}/register", content=registration(name), headers={"content-type": media_type}
        )
        assert assert_problem(response, 415)["type"].endswith("/unsupported-media-type")
        async with db_engine.connect() as conn:
            found = (await conn.execute(text("SELECT count(*) FROM users WHERE username = :n"), {"n": name})).scalar()
        assert found == 0, media_type
    refused = await client.post(
        f"{AUTH}/login", content='{"username": "a", "password": "b"}', headers={"content-type": "text/plain"}
    )
    assert_problem(refused, 415)
    # JSON's own types, with parameters or in any case, and no type at all are read as JSON.
    json_types: tuple[str | None, ...] = (
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        None,
    )
    for json_type in json_types:
        name = unique_name("typed")
        headers = {"content-type": json_type} if json_type else {}
        response = await client.post(f"{AUTH}/register", content=registration(name), headers=headers)
        assert response.status_code == 201, (json_type, response.text)
