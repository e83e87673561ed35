"""What the user-management tests (tests/integration/test_user_admin_*.py) share: the
User and page shapes of docs/api.md, the admin operations, and the requests and database
look-ups that arrange and check them."""

from __future__ import annotations

import base64
import json
from typing import Any

from httpx import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import AUTH, USER_FIELDS, USERS, Client, register, unique_name

Account = dict[str, Any]

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
    """``body`` is a User exactly as docs/api.md lists it: no hash, no extra field."""
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
