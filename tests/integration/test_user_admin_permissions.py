"""Who may list, read, change and delete users over real HTTP: the role matrix of the
"Users" admin rows of docs/api.md, refused changes leaving the target untouched, and 401 with
WWW-Authenticate without a valid token."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import ME, Client, assert_problem, make_user
from tests.integration.user_admin import OPERATIONS, assert_page, assert_user, call, db_row, ids, new_user, set_role

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
