"""Input that once produced a 500 or the wrong account: each must get a clean 4xx."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, USERS, Client, assert_problem, login, make_user, register


async def test_control_characters_in_the_login_name_are_just_bad_credentials(client: Client) -> None:
    await register(client, "nul_target")
    for name in ["nul\x00target", "nul_target\x00", "\x00", "a\u200bb"]:
        assert_problem(await login(client, name), 401)


async def test_control_characters_in_the_search_are_422(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    # A final newline too: Python's "$" matches just before one (finding 8d of #12).
    for q in ["\x00", "a\x00b", "tab\there", "newline-at-the-end\n", "\n", "crlf\r\n"]:
        problem = assert_problem(await client.get(USERS, params={"q": q}, headers=admin["headers"]), 422)
        assert "q" in {e["field"] for e in problem["errors"]}


async def test_a_body_that_is_not_utf8_is_400(client: Client) -> None:
    for raw in [b'{"username":"\xed\xa0\x80","password":"x"}', b'{"username":"\xff","password":"y"}']:
        response = await client.post(f"{AUTH}/login", content=raw, headers={"content-type": "application/json"})
        assert_problem(response, 400)


async def test_full_width_email_is_the_same_address_at_registration_and_login(client: Client) -> None:
    full_width = "\uff4a\uff4f\uff48\uff4e@example.com"
    created = await register(client, "jw_one", email=full_width)
    assert created.status_code == 201, created.text
    assert created.json()["email"] == "john@example.com"
    # Its ASCII twin is the same account, so it is taken...
    problem = assert_problem(await register(client, "jw_two", email="JOHN@example.com"), 409)
    assert [e["field"] for e in problem["errors"]] == ["email"]
    # ...and logging in with either spelling reaches jw_one.
    for spelling in [full_width, "john@EXAMPLE.com"]:
        tokens = (await login(client, spelling)).json()
        me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.json()["username"] == "jw_one"


async def test_refresh_double_spend_is_caught_on_the_embedded_sqlite_too(
    settings: Settings, signing_key_file: Path, tmp_path: Path
) -> None:
    sqlite = make_settings(f"sqlite+aiosqlite:///{tmp_path}/embedded.sqlite3", signing_key_file)
    assert sqlite.db.should_migrate_on_start
    async with serve(create_app(sqlite)) as client:
        await register(client, "lite_user")
        tokens = (await login(client, "lite_user")).json()
        body = {"refresh_token": tokens["refresh_token"]}
        responses = await asyncio.gather(*(client.post(f"{AUTH}/refresh", json=body) for _ in range(6)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [401] * 5
        # The one that won was a reuse victim too: the whole family is revoked.
        (winner,) = (r.json() for r in responses if r.status_code == 200)
        assert_problem(await client.post(f"{AUTH}/refresh", json={"refresh_token": winner["refresh_token"]}), 401)
