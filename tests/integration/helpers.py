"""Small HTTP helpers so that tests read as the story they check."""

from __future__ import annotations

import itertools
from typing import Any

from httpx import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from testkit.live_server import LiveClient

PASSWORD = "violet-tangerine-47-harbor"
_counter = itertools.count(1)

AUTH = "/api/v1/auth"
USERS = "/api/v1/users"
ME = "/api/v1/users/me"

Client = LiveClient

# Every field of a user as the API shows it (API.md's User), and nothing else.
USER_FIELDS = {
    "id",
    "username",
    "email",
    "full_name",
    "role",
    "is_active",
    "is_verified",
    "mfa_enabled",
    "created_at",
    "updated_at",
}


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter):05d}"


async def register(client: Client, username: str | None = None, **fields: Any) -> Response:
    username = username or unique_name()
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD, **fields}
    return await client.post(f"{AUTH}/register", json=body)


async def login(client: Client, username: str, password: str = PASSWORD) -> Response:
    return await client.post(f"{AUTH}/login", json={"username": username, "password": password})


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def make_user(client: Client, db: AsyncEngine, role: str = "user", username: str | None = None) -> dict[str, Any]:
    """Register a user with ``role`` and log it in; returns the user plus its tokens."""
    response = await register(client, username)
    assert response.status_code == 201, response.text
    user = response.json()
    if role != "user":
        async with db.begin() as conn:
            await conn.execute(text("UPDATE users SET role = :role WHERE id = :id"), {"role": role, "id": user["id"]})
    tokens = (await login(client, user["username"])).json()
    return {**user, "role": role, "tokens": tokens, "headers": bearer(tokens)}


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    """The response is RFC 9457 problem details with ``status``; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body
