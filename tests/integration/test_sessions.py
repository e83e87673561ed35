"""Sessions a person can see and end (/users/me/sessions), an admin's view of a user's
sessions, and the notice mailed when an account logs in from a client never seen."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from testkit.smtp_server import SmtpServer
from tests.integration.helpers import (
    AUTH,
    ME,
    PASSWORD,
    USERS,
    Client,
    assert_problem,
    bearer,
    make_user,
    register,
)
from tests.integration.mail_flows import (
    MailedService,
    body_html,
    body_text,
    mailed_service,
    settings_with_mail,
    smtp,  # noqa: F401 - the fixture
)

SESSIONS = f"{ME}/sessions"
PHONE = "Mozilla/5.0 (Linux; Android 15) Mobile"
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"


async def login_as(client: Client, username: str, agent: str) -> dict[str, Any]:
    response = await client.post(
        f"{AUTH}/login", json={"username": username, "password": PASSWORD}, headers={"User-Agent": agent}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def sid(tokens: dict[str, Any]) -> str:
    return str(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"])


async def test_sessions_are_listed_newest_first_with_their_client_and_the_current_one_marked(client: Client) -> None:
    assert (await register(client, "juggler")).status_code == 201
    phone = await login_as(client, "juggler", PHONE)
    laptop = await login_as(client, "juggler", LAPTOP)
    listed = await client.get(SESSIONS, headers=bearer(laptop))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [item["id"] for item in items] == [sid(laptop), sid(phone)]
    assert [item["current"] for item in items] == [True, False]
    assert [item["user_agent"] for item in items] == [LAPTOP, PHONE]
    for item in items:
        assert item["ip"] == "127.0.0.1"
        assert item["amr"] == ["pwd"]
        created = dt.datetime.fromisoformat(item["created_at"])
        expires = dt.datetime.fromisoformat(item["expires_at"])
        assert created <= dt.datetime.fromisoformat(item["last_used_at"]) < expires
        assert expires - created <= dt.timedelta(days=30)
    claims = jwt.decode(laptop["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd"]


async def test_a_refresh_keeps_the_session_current(client: Client, db_engine: AsyncEngine) -> None:
    assert (await register(client, "refresher")).status_code == 201
    tokens = await login_as(client, "refresher", PHONE)
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE auth_sessions SET last_used_at = created_at - interval '1 hour'"))
    refreshed = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}, headers={"User-Agent": LAPTOP}
    )
    assert refreshed.status_code == 200
    [item] = (await client.get(SESSIONS, headers=bearer(refreshed.json()))).json()["items"]
    assert item["id"] == sid(tokens)
    assert item["user_agent"] == LAPTOP
    assert dt.datetime.fromisoformat(item["last_used_at"]) > dt.datetime.fromisoformat(item["created_at"])
    claims = jwt.decode(refreshed.json()["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd"]


async def test_ending_a_session_from_another_stops_its_tokens(client: Client) -> None:
    assert (await register(client, "closer")).status_code == 201
    lost = await login_as(client, "closer", PHONE)
    here = await login_as(client, "closer", LAPTOP)
    assert (await client.get(ME, headers=bearer(lost))).status_code == 200
    ended = await client.delete(f"{SESSIONS}/{sid(lost)}", headers=bearer(here))
    assert ended.status_code == 204
    assert_problem(await client.get(ME, headers=bearer(lost)), 401)
    assert_problem(await client.post(f"{AUTH}/refresh", json={"refresh_token": lost["refresh_token"]}), 401)
    assert (await client.get(ME, headers=bearer(here))).status_code == 200
    assert [i["id"] for i in (await client.get(SESSIONS, headers=bearer(here))).json()["items"]] == [sid(here)]
    # Ended already, or never the caller's: 404 alike.
    assert_problem(await client.delete(f"{SESSIONS}/{sid(lost)}", headers=bearer(here)), 404)


async def test_another_users_session_is_not_found_and_stays(client: Client) -> None:
    for name in ("owner_a", "owner_b"):
        assert (await register(client, name)).status_code == 201
    a = await login_as(client, "owner_a", PHONE)
    b = await login_as(client, "owner_b", PHONE)
    assert_problem(await client.delete(f"{SESSIONS}/{sid(a)}", headers=bearer(b)), 404)
    assert (await client.get(ME, headers=bearer(a))).status_code == 200


async def test_ending_every_other_session_keeps_the_callers(client: Client) -> None:
    assert (await register(client, "tidy")).status_code == 201
    others = [await login_as(client, "tidy", PHONE) for _ in range(3)]
    here = await login_as(client, "tidy", LAPTOP)
    assert (await client.delete(SESSIONS, headers=bearer(here))).status_code == 204
    for tokens in others:
        assert_problem(await client.get(ME, headers=bearer(tokens)), 401)
    assert [i["id"] for i in (await client.get(SESSIONS, headers=bearer(here))).json()["items"]] == [sid(here)]


async def test_ending_the_current_session_is_a_logout(client: Client) -> None:
    assert (await register(client, "leaver")).status_code == 201
    here = await login_as(client, "leaver", LAPTOP)
    assert (await client.delete(f"{SESSIONS}/{sid(here)}", headers=bearer(here))).status_code == 204
    assert_problem(await client.get(ME, headers=bearer(here)), 401)


async def test_sessions_need_a_signed_in_caller(client: Client) -> None:
    assert_problem(await client.get(SESSIONS), 401)
    assert_problem(await client.delete(SESSIONS), 401)


async def test_an_admin_lists_and_ends_a_users_sessions_and_nobody_else_may(
    client: Client, db_engine: AsyncEngine
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    moderator = await make_user(client, db_engine, role="moderator")
    member = await make_user(client, db_engine)
    second = await login_as(client, member["username"], PHONE)
    path = f"{USERS}/{member['id']}/sessions"

    listed = await client.get(path, headers=admin["headers"])
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert {item["id"] for item in items} == {sid(member["tokens"]), sid(second)}
    assert all("current" not in item for item in items)
    for caller in (moderator, member):
        assert_problem(await client.get(path, headers=caller["headers"]), 403)
        assert_problem(await client.delete(path, headers=caller["headers"]), 403)
    assert_problem(await client.get(f"{USERS}/{admin['id'][:-4]}0000/sessions", headers=admin["headers"]), 404)

    assert (await client.delete(path, headers=admin["headers"])).status_code == 204
    for tokens in (member["tokens"], second):
        assert_problem(await client.get(ME, headers=bearer(tokens)), 401)
    assert (await client.get(path, headers=admin["headers"])).json()["items"] == []
    assert (await client.get(ME, headers=admin["headers"])).status_code == 200


async def test_a_session_past_its_absolute_lifetime_is_not_listed(client: Client, db_engine: AsyncEngine) -> None:
    assert (await register(client, "veteran")).status_code == 201
    old = await login_as(client, "veteran", PHONE)
    here = await login_as(client, "veteran", LAPTOP)
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE auth_sessions SET created_at = now() - interval '31 days' WHERE id = :id"),
            {"id": sid(old)},
        )
    assert [i["id"] for i in (await client.get(SESSIONS, headers=bearer(here))).json()["items"]] == [sid(here)]


# --- The notice of a login from a new client ------------------------------------------


@pytest.fixture
async def service(settings: Settings, signing_key_file: Path, smtp: SmtpServer) -> AsyncIterator[MailedService]:  # noqa: F811
    async with mailed_service(settings_with_mail(settings, signing_key_file, smtp)) as live:
        yield MailedService(live, smtp)


async def test_a_login_from_a_new_client_mails_its_owner_once(service: MailedService) -> None:
    client = service.client
    assert (await register(client, "noticed")).status_code == 201
    await service.mails_to("noticed@example.com", 1)  # the verification mail
    await login_as(client, "noticed", LAPTOP)  # the first login: nothing to tell
    await login_as(client, "noticed", LAPTOP)  # a known client
    await service.no_more_mail_to("noticed@example.com", already=1)

    await login_as(client, "noticed", "<b>Evil</b> agent")
    [_, notice] = await service.mails_to("noticed@example.com", 2)
    assert notice.message["Subject"] == "New sign-in to your account"
    assert "127.0.0.1" in body_text(notice)
    assert "<b>Evil</b> agent" in body_text(notice)
    assert "&lt;b&gt;Evil&lt;/b&gt; agent" in body_html(notice)  # escaped in HTML
    await login_as(client, "noticed", "<b>Evil</b> agent")  # known now
    await service.no_more_mail_to("noticed@example.com", already=2)


async def test_the_notice_can_be_turned_off(settings: Settings, signing_key_file: Path, smtp: SmtpServer) -> None:  # noqa: F811
    configured = settings_with_mail(settings, signing_key_file, smtp, mail={"new_login_notice": False})
    async with mailed_service(configured) as client:
        service = MailedService(client, smtp)
        assert (await register(client, "quiet")).status_code == 201
        await login_as(client, "quiet", LAPTOP)
        await login_as(client, "quiet", PHONE)
        await service.mails_to("quiet@example.com", 1)
        await service.no_more_mail_to("quiet@example.com", already=1)
