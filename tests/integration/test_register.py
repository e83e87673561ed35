"""POST /api/v1/auth/register: docs/api.md's validation rules, conflicts and races."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import AUTH, PASSWORD, USER_FIELDS, Client, assert_problem, register


async def test_register_returns_the_new_user_without_any_hash(client: Client) -> None:
    response = await register(client, "new_member", full_name="New Member")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["username"] == "new_member"
    assert body["email"] == "new_member@example.com"
    assert body["full_name"] == "New Member"
    assert (body["role"], body["is_active"], body["is_verified"]) == ("user", True, False)
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    assert "argon2" not in response.text


async def test_password_is_stored_as_argon2id_only(client: Client, db_engine: AsyncEngine) -> None:
    await register(client, "hash_owner")
    async with db_engine.connect() as conn:
        stored = (
            await conn.execute(text("SELECT password_hash FROM users WHERE username = 'hash_owner'"))
        ).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_full_width_username_folds_to_ascii(client: Client) -> None:
    response = await register(client, "\uff41\uff4c\uff49\uff43\uff45", email="alice@example.com")
    assert response.status_code == 201, response.text
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize(
    ("first", "second", "field"),
    [
        ({"username": "Carol"}, {"username": "cAROL"}, "username"),
        ({"email": "Dave@Example.com"}, {"email": "dave@EXAMPLE.com"}, "email"),
        # The full-width form of a taken name is the same name after NFKC.
        ({"username": "quinn"}, {"username": "\uff51\uff55\uff49\uff4e\uff4e"}, "username"),
    ],
)
async def test_taken_username_or_email_is_409_naming_the_field(
    client: Client, first: dict[str, str], second: dict[str, str], field: str
) -> None:
    base = {"username": "someone", "email": "someone@example.com", "password": PASSWORD}
    ok = await client.post(f"{AUTH}/register", json={**base, **first})
    assert ok.status_code == 201, ok.text
    other = {"username": "other_one", "email": "other_one@example.com", "password": PASSWORD}
    body = assert_problem(await client.post(f"{AUTH}/register", json={**other, **second}), 409)
    assert [e["field"] for e in body["errors"]] == [field]


async def test_both_fields_taken_are_both_reported(client: Client) -> None:
    await register(client, "twice")
    body = assert_problem(await register(client, "TWICE", email="Twice@example.com"), 409)
    assert {e["field"] for e in body["errors"]} == {"username", "email"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "a" * 33}, "username"),
        ({"username": "has space"}, "username"),
        ({"username": "bad@name"}, "username"),
        ({"username": "caf\u00e9"}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"password": "short7!"}, "password"),
        ({"password": "x" * 257}, "password"),
        ({"password": "password123"}, "password"),
        ({"password": "qwertyuiop"}, "password"),
        ({"username": "frank_w", "password": "my-FRANK_W-secret"}, "password"),
        ({"full_name": "x" * 201}, "full_name"),
        ({"full_name": "bell\u0007"}, "full_name"),
    ],
)
async def test_rule_breaking_input_is_422_naming_the_field(
    client: Client, overrides: dict[str, str], field: str
) -> None:
    body = {"username": "valid_name", "email": "valid@example.com", "password": PASSWORD, **overrides}
    problem = assert_problem(await client.post(f"{AUTH}/register", json=body), 422)
    assert field in {e["field"] for e in problem["errors"]}
    assert all(e["message"] for e in problem["errors"])


async def test_boundary_lengths_are_accepted(client: Client) -> None:
    assert (await register(client, "abc", password="k" * 5 + "zQ9!x")).status_code == 201
    assert (await register(client, "b" * 32, password="Zq" * 128)).status_code == 201


async def test_every_broken_rule_is_reported_at_once(client: Client) -> None:
    body = {"username": "x", "email": "nope", "password": "1"}
    problem = assert_problem(await client.post(f"{AUTH}/register", json=body), 422)
    assert {e["field"] for e in problem["errors"]} == {"username", "email", "password"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": 42, "email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "abc", "email": "a@example.com", "password": PASSWORD, "role": "admin"}, "role"),
    ],
)
async def test_wrong_types_missing_or_unknown_fields_are_422(client: Client, body: object, field: str) -> None:
    problem = assert_problem(await client.post(f"{AUTH}/register", json=body), 422)
    assert field in {e["field"] for e in problem["errors"]}


async def test_a_client_cannot_register_itself_as_admin(client: Client, db_engine: AsyncEngine) -> None:
    body = {"username": "sneaky", "email": "s@example.com", "password": PASSWORD, "role": "admin"}
    assert (await client.post(f"{AUTH}/register", json=body)).status_code == 422
    async with db_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"username": "a"', b"\xff\xfe"])
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    response = await client.post(f"{AUTH}/register", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 400)


async def test_body_over_the_limit_is_413_and_nothing_is_stored(client: Client, db_engine: AsyncEngine) -> None:
    body = {"username": "large", "email": "large@example.com", "password": PASSWORD, "full_name": "x" * 70_000}
    assert_problem(await client.post(f"{AUTH}/register", json=body), 413)
    async with db_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0


async def test_concurrent_duplicate_registrations_give_one_201_and_409s(client: Client, db_engine: AsyncEngine) -> None:
    async def attempt(i: int) -> int:
        # Same username in varying letter case, distinct emails: only the database can decide.
        name = "racer" if i % 2 else "RACER"
        body = {"username": name, "email": f"racer{i}@example.com", "password": PASSWORD}
        return (await client.post(f"{AUTH}/register", json=body)).status_code

    statuses = await asyncio.gather(*(attempt(i) for i in range(20)))
    assert sorted(statuses) == [201] + [409] * 19
    async with db_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 1
