"""PATCH /users/{id} over real HTTP changes only the fields sent and refuses invalid or
malformed bodies without touching the user."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import Client, assert_problem, make_user
from tests.integration.user_admin import assert_user, db_row, error_fields, new_user, patch_user, user_url


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
