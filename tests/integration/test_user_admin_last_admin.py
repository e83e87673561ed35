"""Two admins removing each other at the same moment: one wins, the other is refused, and
an admin always remains (finding 3 of the security review). Each round sends both
requests at once, in both orders of arrival, over real HTTP on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from httpx import Response
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import Client, make_user
from tests.integration.user_admin import db_row, patch_user, user_url

ROUNDS = 8
REMOVALS: dict[str, dict[str, Any] | None] = {
    "demote": {"role": "user"},
    "deactivate": {"is_active": False},
    "delete": None,
}


async def _remove(client: Client, actor: dict[str, Any], target: dict[str, Any], how: str) -> Response:
    body = REMOVALS[how]
    if body is None:
        return await client.delete(user_url(target["id"]), headers=actor["headers"])
    return await patch_user(client, actor["headers"], target["id"], body)


async def _still_admin(db: AsyncEngine, user: dict[str, Any]) -> bool:
    row = await db_row(db, user["id"])
    return bool(row["role"] == "admin" and row["is_active"] and row["deleted_at"] is None)


@pytest.mark.parametrize("how", sorted(REMOVALS))
async def test_two_admins_removing_each_other_at_once_leave_exactly_one(
    client: Client, db_engine: AsyncEngine, how: str
) -> None:
    for round_number in range(ROUNDS):
        first = await make_user(client, db_engine, role="admin")
        second = await make_user(client, db_engine, role="admin")
        pair = (first, second) if round_number % 2 == 0 else (second, first)
        answers = await asyncio.gather(_remove(client, pair[0], pair[1], how), _remove(client, pair[1], pair[0], how))

        statuses = sorted(answer.status_code for answer in answers)
        assert statuses[0] in (200, 204), [a.text for a in answers]
        assert statuses[1] == 403, [a.text for a in answers]
        survivors = [await _still_admin(db_engine, user) for user in (first, second)]
        assert survivors.count(True) == 1, (how, round_number, survivors)


async def test_a_demoted_admin_cannot_finish_a_change_it_started_as_admin(
    client: Client, db_engine: AsyncEngine
) -> None:
    """The order behind the test above, one step at a time: once demoted, the same token
    can no longer administer, whatever its claims say."""
    first = await make_user(client, db_engine, role="admin")
    second = await make_user(client, db_engine, role="admin")
    target = await make_user(client, db_engine)
    assert (await patch_user(client, first["headers"], second["id"], {"role": "user"})).status_code == 200
    refused = await patch_user(client, second["headers"], target["id"], {"is_active": False})
    assert refused.status_code == 403
    assert (await db_row(db_engine, target["id"]))["is_active"] is True
