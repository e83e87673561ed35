"""User management over real HTTP: the "Users" admin rows of API.md.

Who may list, read, change and delete users; pagination and filters of the collection;
soft delete; deactivation; role changes taking effect at once.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from httpx import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import (
    AUTH,
    ME,
    USERS,
    Client,
    assert_problem,
    bearer,
    login,
    make_user,
    register,
    unique_name,
)

Account = dict[str, Any]

USER_FIELDS = {"id", "username", "email", "full_name", "role", "is_active", "is_verified", "created_at", "updated_at"}
PAGE_FIELDS = {"items", "total", "limit", "offset"}

# operation -> (method, addressed to a target user?, JSON body)
OPERATIONS: dict[str, tuple[str, bool, dict[str, Any] | None]] = {
    "list": ("GET", False, None),
    "get": ("GET", True, None),
    "patch_is_active": ("PATCH", True, {"is_active": False}),
    "patch_role": ("PATCH", True, {"role": "moderator"}),
    "delete": ("DELETE", True, None),
}


# --- helpers -------------------------------------------------------------------------------------


def user_url(user_id: str) -> str:
    return f"{USERS}/{user_id}"


async def call(client: Client, operation: str, target_id: str, headers: dict[str, str] | None = None) -> Response:
    method, on_target, body = OPERATIONS[operation]
    url = user_url(target_id) if on_target else USERS
    return await client.request(method, url, json=body, headers=headers)


def assert_user(body: Any) -> dict[str, Any]:
    """``body`` is a User exactly as API.md lists it: no hash, no extra field."""
    assert isinstance(body, dict)
    assert set(body) == USER_FIELDS, sorted(body)
    return body


def assert_page(response: Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == PAGE_FIELDS
    for item in body["items"]:
        assert_user(item)
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def jwt_claims(token: str) -> dict[str, Any]:
    """The JWT payload, decoded without verifying the signature."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def new_user(client: Client, username: str | None = None, **fields: Any) -> Account:
    """Register (without logging in) and return the created user."""
    response = await register(client, username or unique_name(), **fields)
    assert response.status_code == 201, response.text
    return assert_user(response.json())


async def new_users(client: Client, count: int) -> list[Account]:
    return [await new_user(client) for _ in range(count)]


async def set_role(db: AsyncEngine, user_id: str, role: str) -> None:
    async with db.begin() as conn:
        await conn.execute(text("UPDATE users SET role = :role WHERE id = :id"), {"role": role, "id": user_id})


async def db_set_inactive(db: AsyncEngine, user_id: str) -> None:
    async with db.begin() as conn:
        await conn.execute(text("UPDATE users SET is_active = false WHERE id = :id"), {"id": user_id})


async def db_row(db: AsyncEngine, user_id: str) -> dict[str, Any]:
    async with db.connect() as conn:
        result = await conn.execute(
            text("SELECT role, is_active, deleted_at FROM users WHERE id = :id"), {"id": user_id}
        )
        row = result.mappings().one()
    return dict(row)


async def refresh(client: Client, refresh_token: str) -> Response:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": refresh_token})


async def list_users(client: Client, headers: dict[str, str], **params: Any) -> Response:
    return await client.get(USERS, headers=headers, params=params)


async def patch_user(client: Client, headers: dict[str, str], user_id: str, body: dict[str, Any]) -> Response:
    return await client.patch(user_url(user_id), headers=headers, json=body)


def error_fields(body: dict[str, Any]) -> list[str]:
    errors = body.get("errors")
    assert isinstance(errors, list), body
    assert errors, body
    for error in errors:
        assert {"field", "message"} <= set(error), error
    return [error["field"] for error in errors]


# --- 1. role matrix ------------------------------------------------------------------------------

ROLE_MATRIX = [
    # actor role, operation, target role, expected status
    ("user", "list", "user", 403),
    ("user", "get", "user", 403),
    ("user", "patch_is_active", "user", 403),
    ("user", "patch_role", "user", 403),
    ("user", "delete", "user", 403),
    ("moderator", "list", "user", 200),
    ("moderator", "get", "user", 200),
    ("moderator", "patch_is_active", "user", 200),
    ("moderator", "patch_is_active", "moderator", 403),
    ("moderator", "patch_is_active", "admin", 403),
    ("moderator", "patch_role", "user", 403),
    ("moderator", "delete", "user", 403),
    ("admin", "list", "user", 200),
    ("admin", "get", "user", 200),
    ("admin", "patch_is_active", "user", 200),
    ("admin", "patch_role", "user", 200),
    ("admin", "delete", "user", 204),
]


@pytest.mark.parametrize(
    ("actor_role", "operation", "target_role", "expected"),
    ROLE_MATRIX,
    ids=[f"{a}-{op}-on-{t}-{s}" for a, op, t, s in ROLE_MATRIX],
)
async def test_role_matrix(
    client: Client, db_engine: AsyncEngine, actor_role: str, operation: str, target_role: str, expected: int
) -> None:
    actor = await make_user(client, db_engine, role=actor_role)
    target = await new_user(client)
    await set_role(db_engine, target["id"], target_role)

    response = await call(client, operation, target["id"], actor["headers"])

    if expected == 403:
        assert_problem(response, 403)
    elif operation == "list":
        assert target["id"] in ids(assert_page(response))
    elif expected == 204:
        assert response.status_code == 204, response.text
        assert response.content == b""
    else:
        assert response.status_code == expected, response.text
        body = assert_user(response.json())
        assert body["id"] == target["id"]
        if operation == "patch_is_active":
            assert body["is_active"] is False
        if operation == "patch_role":
            assert body["role"] == "moderator"


REFUSED_WRITES = [(a, op, t) for a, op, t, s in ROLE_MATRIX if s == 403 and op not in {"list", "get"}]


@pytest.mark.parametrize(
    ("actor_role", "operation", "target_role"),
    REFUSED_WRITES,
    ids=[f"{a}-{op}-on-{t}" for a, op, t in REFUSED_WRITES],
)
async def test_refused_change_leaves_target_untouched(
    client: Client, db_engine: AsyncEngine, actor_role: str, operation: str, target_role: str
) -> None:
    actor = await make_user(client, db_engine, role=actor_role)
    target = await make_user(client, db_engine, role=target_role)

    assert_problem(await call(client, operation, target["id"], actor["headers"]), 403)

    assert await db_row(db_engine, target["id"]) == {"role": target_role, "is_active": True, "deleted_at": None}
    assert (await client.get(ME, headers=target["headers"])).status_code == 200


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}],
    ids=["no-token", "garbage-token", "basic-auth"],
)
async def test_without_valid_token_answers_401_with_www_authenticate(
    client: Client, db_engine: AsyncEngine, operation: str, headers: dict[str, str]
) -> None:
    target = await new_user(client)

    response = await call(client, operation, target["id"], headers)

    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert (await db_row(db_engine, target["id"]))["deleted_at"] is None


# --- 2. pagination and filters -------------------------------------------------------------------


async def test_list_defaults_to_20_items_and_total_counts_every_live_user(
    client: Client, db_engine: AsyncEngine
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 25)

    page = assert_page(await list_users(client, admin["headers"]))

    assert page["limit"] == 20
    assert page["offset"] == 0
    assert len(page["items"]) == 20
    assert page["total"] == 26  # the 25 users and the admin


async def test_pages_do_not_overlap_and_cover_everyone_in_a_stable_order(
    client: Client, db_engine: AsyncEngine
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    created = await new_users(client, 25)
    everyone = {admin["id"]} | {user["id"] for user in created}

    seen: list[str] = []
    for offset in range(0, 28, 7):
        page = assert_page(await list_users(client, admin["headers"], limit=7, offset=offset))
        assert (page["limit"], page["offset"], page["total"]) == (7, offset, 26)
        assert len(page["items"]) == min(7, 26 - offset)
        seen += ids(page)

    assert len(seen) == len(set(seen)) == 26
    assert set(seen) == everyone
    in_one_page = ids(assert_page(await list_users(client, admin["headers"], limit=100)))
    assert seen == in_one_page
    assert ids(assert_page(await list_users(client, admin["headers"], limit=100))) == in_one_page


async def test_offset_past_the_end_gives_empty_items_and_the_full_total(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], offset=50))

    assert page["items"] == []
    assert page["total"] == 4


INVALID_QUERIES = [
    ("limit", "0"),
    ("limit", "101"),
    ("limit", "-5"),
    ("limit", "ten"),
    ("offset", "-1"),
    ("role", "superuser"),
    ("is_active", "maybe"),
]


@pytest.mark.parametrize(("parameter", "value"), INVALID_QUERIES, ids=[f"{p}={v}" for p, v in INVALID_QUERIES])
async def test_invalid_query_parameter_answers_422_naming_it(
    client: Client, db_engine: AsyncEngine, parameter: str, value: str
) -> None:
    admin = await make_user(client, db_engine, role="admin")

    response = await client.get(USERS, headers=admin["headers"], params={parameter: value})

    body = assert_problem(response, 422)
    assert parameter in error_fields(body)


@pytest.mark.parametrize("limit", [1, 100])
async def test_limit_bounds_are_inclusive(client: Client, db_engine: AsyncEngine, limit: int) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 2)

    page = assert_page(await list_users(client, admin["headers"], limit=limit))

    assert page["limit"] == limit
    assert len(page["items"]) == min(limit, 3)
    assert page["total"] == 3


async def test_filter_by_role(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    users = await new_users(client, 5)
    moderators = users[1:4]
    for moderator in moderators:
        await set_role(db_engine, moderator["id"], "moderator")

    page = assert_page(await list_users(client, admin["headers"], role="moderator", limit=2))

    assert page["total"] == 3
    assert len(page["items"]) == 2
    everyone = assert_page(await list_users(client, admin["headers"], role="moderator"))
    assert set(ids(everyone)) == {m["id"] for m in moderators}
    assert all(item["role"] == "moderator" for item in everyone["items"])


async def test_filter_by_is_active(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    users = await new_users(client, 4)
    for user in users[:2]:
        assert (await patch_user(client, admin["headers"], user["id"], {"is_active": False})).status_code == 200

    inactive = assert_page(await list_users(client, admin["headers"], is_active="false"))
    active = assert_page(await list_users(client, admin["headers"], is_active="true"))

    assert inactive["total"] == 2
    assert set(ids(inactive)) == {u["id"] for u in users[:2]}
    assert all(item["is_active"] is False for item in inactive["items"])
    assert active["total"] == 3
    assert set(ids(active)) == {admin["id"]} | {u["id"] for u in users[2:]}


async def test_q_matches_username_substring_case_insensitively(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    wanted = [await new_user(client, f"{unique_name('Zebra')}x"), await new_user(client, unique_name("azebra"))]
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], q="ZEBRA"))

    assert page["total"] == 2
    assert set(ids(page)) == {u["id"] for u in wanted}


async def test_q_matches_email_substring(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    by_email = await new_user(client, unique_name("plain"), email=f"Kiwi.{unique_name('x')}@example.com")
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], q="kIWI."))

    assert page["total"] == 1
    assert ids(page) == [by_email["id"]]


async def test_q_does_not_match_full_name(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_user(client, full_name="Quokka Jones")

    page = assert_page(await list_users(client, admin["headers"], q="quokka"))

    assert page["total"] == 0


@pytest.mark.parametrize("wildcard", ["%", "_", "%%", "a%b", "__"])
async def test_q_with_like_wildcards_is_literal_and_matches_nothing_here(
    client: Client, db_engine: AsyncEngine, wildcard: str
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], q=wildcard))

    assert page["total"] == 0
    assert page["items"] == []


async def test_q_underscore_matches_only_a_literal_underscore(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    stem = unique_name("qq")
    with_underscore = await new_user(client, f"{stem}a_b")
    await new_user(client, f"{stem}axb")  # would match if "_" were a wildcard

    page = assert_page(await list_users(client, admin["headers"], q="a_b"))

    assert ids(page) == [with_underscore["id"]]
    assert page["total"] == 1


async def test_combined_filters_and_total_reflects_filter_not_page(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    stem = unique_name("combo")
    matching: list[Account] = []
    for index in range(3):
        user = await new_user(client, f"{stem}m{index}")
        await set_role(db_engine, user["id"], "moderator")
        assert (await patch_user(client, admin["headers"], user["id"], {"is_active": False})).status_code == 200
        matching.append(user)
    active_moderator = await new_user(client, f"{stem}active")
    await set_role(db_engine, active_moderator["id"], "moderator")
    inactive_plain = await new_user(client, f"{stem}plain")
    assert (await patch_user(client, admin["headers"], inactive_plain["id"], {"is_active": False})).status_code == 200
    other_inactive_moderator = await new_user(client, unique_name("other"))
    await set_role(db_engine, other_inactive_moderator["id"], "moderator")
    await db_set_inactive(db_engine, other_inactive_moderator["id"])

    filters = {"role": "moderator", "is_active": "false", "q": stem.upper()}
    first = assert_page(await list_users(client, admin["headers"], limit=2, **filters))
    second = assert_page(await list_users(client, admin["headers"], limit=2, offset=2, **filters))

    assert first["total"] == second["total"] == 3
    assert len(first["items"]) == 2
    assert len(second["items"]) == 1
    assert set(ids(first) + ids(second)) == {u["id"] for u in matching}


async def test_moderator_sees_the_same_list_as_admin(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    moderator = await make_user(client, db_engine, role="moderator")
    await new_users(client, 3)

    as_admin = assert_page(await list_users(client, admin["headers"]))
    as_moderator = assert_page(await list_users(client, moderator["headers"]))

    assert as_moderator == as_admin
    assert as_admin["total"] == 5


# --- 3. soft delete ------------------------------------------------------------------------------


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


# --- 4. deactivation -----------------------------------------------------------------------------


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


# --- 5. role changes and PATCH validation --------------------------------------------------------


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


async def test_patch_changes_only_the_fields_sent(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await new_user(client, full_name="Ada Lovelace")

    response = await patch_user(client, admin["headers"], target["id"], {"role": "moderator"})

    body = assert_user(response.json())
    assert body["role"] == "moderator"
    unchanged = {k: v for k, v in body.items() if k not in {"role", "updated_at"}}
    assert unchanged == {k: v for k, v in target.items() if k not in {"role", "updated_at"}}


INVALID_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-role", {"role": "superuser"}, "role"),
    ("role-wrong-case", {"role": "ADMIN"}, "role"),
    ("role-not-string", {"role": 1}, "role"),
    ("is-active-string", {"is_active": "no"}, "is_active"),
    ("is-active-null", {"is_active": None}, "is_active"),
    ("unknown-field", {"is_active": True, "password_hash": "x"}, "password_hash"),
    ("unknown-field-alone", {"deleted_at": None}, "deleted_at"),
]


@pytest.mark.parametrize(("body", "field"), [b[1:] for b in INVALID_BODIES], ids=[b[0] for b in INVALID_BODIES])
async def test_patch_with_invalid_body_answers_422_naming_the_field(
    client: Client, db_engine: AsyncEngine, body: dict[str, Any], field: str
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await new_user(client)

    problem = assert_problem(await patch_user(client, admin["headers"], target["id"], body), 422)

    assert field in error_fields(problem)
    assert await db_row(db_engine, target["id"]) == {"role": "user", "is_active": True, "deleted_at": None}


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b'{"role": "admin"', b"\xff\xfe"], ids=["garbage", "empty", "cut", "bytes"]
)
async def test_patch_with_malformed_json_answers_400(client: Client, db_engine: AsyncEngine, raw: bytes) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await new_user(client)

    response = await client.patch(
        user_url(target["id"]),
        headers={**admin["headers"], "Content-Type": "application/json"},
        content=raw,
    )

    assert_problem(response, 400)
    assert await db_row(db_engine, target["id"]) == {"role": "user", "is_active": True, "deleted_at": None}


# --- 6. reading one user, and the User shape -----------------------------------------------------


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
