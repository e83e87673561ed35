"""The audit trail: each security event of an account is a row its owner and an admin can
page through, with where it came from; failed logins of names nobody has are not written."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.container import container_of
from app.lifespan import purge_audit_round
from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from testkit.smtp_server import SmtpServer
from tests.integration.helpers import (
    AUTH,
    ME,
    PASSWORD,
    USERS,
    Client,
    assert_problem,
    bearer,
    login,
    make_user,
    register,
)
from tests.integration.mail_flows import (
    MailedService,
    mailed_service,
    settings_with_mail,
    smtp,  # noqa: F401 - the fixture
)

EVENTS = f"{ME}/events"
AGENT = "AuditTest/1.0"
NEW_PASSWORD = "copper-meadow-58-kestrel"


async def events_of(client: Client, tokens: dict[str, Any], **params: Any) -> dict[str, Any]:
    """The caller's events once the deferred ones (written after a response) are in."""
    await asyncio.sleep(0.2)
    response = await client.get(EVENTS, headers=bearer(tokens), params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_rows(db: AsyncEngine) -> list[Any]:
    await asyncio.sleep(0.2)
    async with db.connect() as conn:
        return list((await conn.execute(text("SELECT type, user_id, detail FROM security_events"))).all())


async def test_an_accounts_life_is_written_newest_first_with_where_it_came_from(client: Client) -> None:
    assert (await register(client, "diarist")).status_code == 201
    assert_problem(await login(client, "diarist", "not-the-password-9"), 401)
    tokens = (
        await client.post(
            f"{AUTH}/login",
            json={"username": "diarist", "password": PASSWORD},
            headers={"User-Agent": AGENT, "X-Request-ID": "audit-login-1"},
        )
    ).json()
    changed = await client.put(
        f"{ME}/password", headers=bearer(tokens), json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 204
    other = (await login(client, "diarist", NEW_PASSWORD)).json()
    assert (await client.post(f"{AUTH}/logout", json={"refresh_token": other["refresh_token"]})).status_code == 204

    page = await events_of(client, tokens)
    types = [item["type"] for item in page["items"]]
    assert types == [
        "logged_out",
        "login_succeeded",
        "password_changed",
        "login_succeeded",
        "login_failed",
        "registered",
    ]
    assert page["total"] == 6
    assert (page["limit"], page["offset"]) == (20, 0)
    login_row = page["items"][3]
    assert (login_row["ip"], login_row["user_agent"], login_row["request_id"]) == ("127.0.0.1", AGENT, "audit-login-1")
    assert page["items"][4]["detail"] == {"reason": "wrong_password"}
    assert set(page["items"][0]) == {"id", "type", "at", "ip", "user_agent", "request_id", "detail"}
    ats = [dt.datetime.fromisoformat(item["at"]) for item in page["items"]]
    assert ats == sorted(ats, reverse=True)
    # Paging.
    second = await events_of(client, tokens, limit=2, offset=2)
    assert [i["type"] for i in second["items"]] == types[2:4]
    assert second["total"] == 6
    assert_problem(await client.get(EVENTS, headers=bearer(tokens), params={"limit": 0}), 422)


async def test_failed_logins_for_names_nobody_has_are_not_written(client: Client, db_engine: AsyncEngine) -> None:
    for name in ("ghost_one", "ghost@example.com", "x" * 30):
        assert_problem(await login(client, name, "some-guess-123"), 401)
    assert await all_rows(db_engine) == []


async def test_a_throttled_known_account_is_written_once_the_block_starts(client: Client) -> None:
    assert (await register(client, "besieged")).status_code == 201
    statuses = [(await login(client, "besieged", f"wrong-guess-{i}")).status_code for i in range(8)]
    assert 429 in statuses
    tokens = None
    for _ in range(40):  # the block lasts seconds; the owner gets in after it
        response = await login(client, "besieged")
        if response.status_code == 200:
            tokens = response.json()
            break
        await asyncio.sleep(0.5)
    assert tokens is not None
    types = [item["type"] for item in (await events_of(client, tokens, limit=100))["items"]]
    assert "login_throttled" in types
    assert types.count("login_failed") == statuses.count(401)


async def test_admin_actions_name_their_actor_and_only_admins_read_others_events(
    client: Client, db_engine: AsyncEngine
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    moderator = await make_user(client, db_engine, role="moderator")
    member = await make_user(client, db_engine)
    path = f"{USERS}/{member['id']}"
    assert (await client.patch(path, headers=admin["headers"], json={"role": "moderator"})).status_code == 200
    assert (await client.patch(path, headers=admin["headers"], json={"is_active": False})).status_code == 200
    assert (await client.patch(path, headers=admin["headers"], json={"is_active": True})).status_code == 200
    assert (await client.delete(f"{path}/sessions", headers=admin["headers"])).status_code == 204
    assert (await client.delete(path, headers=admin["headers"])).status_code == 204

    async with db_engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT type, actor_id, detail FROM security_events WHERE actor_id IS NOT NULL ORDER BY at")
            )
        ).all()
    assert [row.type for row in rows] == ["role_changed", "deactivated", "reactivated", "session_revoked", "deleted"]
    assert {str(row.actor_id) for row in rows} == {admin["id"]}
    assert rows[0].detail == {"old_role": "user", "new_role": "moderator"}

    other = await make_user(client, db_engine)
    listed = await client.get(f"{USERS}/{other['id']}/events", headers=admin["headers"])
    assert listed.status_code == 200, listed.text
    assert [i["type"] for i in listed.json()["items"]] == ["login_succeeded", "registered"]
    for caller in (moderator, other):
        assert_problem(await client.get(f"{USERS}/{admin['id']}/events", headers=caller["headers"]), 403)
    # A deleted user's trail is not served (404), though its rows stay for the retention.
    assert_problem(await client.get(f"{path}/events", headers=admin["headers"]), 404)


async def test_events_need_a_signed_in_caller(client: Client) -> None:
    assert_problem(await client.get(EVENTS), 401)


async def test_session_and_refresh_events(client: Client) -> None:
    assert (await register(client, "sessioned")).status_code == 201
    first = (await login(client, "sessioned")).json()
    second = (await login(client, "sessioned")).json()
    rotated = await client.post(f"{AUTH}/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    # Replaying the spent token is a reuse: its family is revoked, and written.
    assert_problem(await client.post(f"{AUTH}/refresh", json={"refresh_token": first["refresh_token"]}), 401)
    assert (await client.delete(f"{ME}/sessions", headers=bearer(second))).status_code == 204
    types = [i["type"] for i in (await events_of(client, second))["items"]]
    assert types[:2] == ["session_revoked", "refresh_reuse_detected"]


@pytest.fixture
async def service(settings: Settings, signing_key_file: Path, smtp: SmtpServer) -> AsyncIterator[MailedService]:  # noqa: F811
    async with mailed_service(settings_with_mail(settings, signing_key_file, smtp)) as live:
        yield MailedService(live, smtp)


async def test_the_mailed_link_flows_are_written(service: MailedService) -> None:
    client = service.client
    assert (await register(client, "linked")).status_code == 201
    tokens = (await login(client, "linked")).json()
    verify = await service.link_to("linked@example.com", "/account/verify-email")
    assert (await client.post(f"{AUTH}/verify-email/confirm", json={"token": verify})).status_code == 204
    change = await client.post(
        f"{ME}/email",
        headers=bearer(tokens),
        json={"new_email": "linked.new@example.com", "current_password": PASSWORD},
    )
    assert change.status_code == 202
    moved = await service.link_to("linked.new@example.com", "/account/confirm-email-change")
    assert (await client.post(f"{AUTH}/email-change/confirm", json={"token": moved})).status_code == 204
    assert (
        await client.post(f"{AUTH}/password-reset/request", json={"email": "linked.new@example.com"})
    ).status_code == 202
    reset = await service.link_to("linked.new@example.com", "/account/reset-password")
    done = await client.post(f"{AUTH}/password-reset/confirm", json={"token": reset, "new_password": NEW_PASSWORD})
    assert done.status_code == 204
    fresh = (await login(client, "linked", NEW_PASSWORD)).json()
    items = (await events_of(client, fresh))["items"]
    assert [i["type"] for i in items] == [
        "login_succeeded",
        "password_reset",
        "password_reset_requested",
        "email_changed",
        "email_change_requested",
        "email_verified",
        "login_succeeded",
        "registered",
    ]
    assert items[3]["detail"] == {"old_email": "linked@example.com", "new_email": "linked.new@example.com"}
    # No token, password or hash in any detail.
    assert all("token" not in str(i["detail"]) and "argon2" not in str(i["detail"]) for i in items)


async def test_the_retention_purge_deletes_only_old_rows_and_counts_them(
    settings: Settings, db_engine: AsyncEngine
) -> None:
    app = create_app(settings)
    async with serve(app) as client:
        assert (await register(client, "old_timer")).status_code == 201
        tokens = (await login(client, "old_timer")).json()
        async with db_engine.begin() as conn:
            await conn.execute(
                text("UPDATE security_events SET at = now() - interval '181 days' WHERE type = 'registered'")
            )
        assert await purge_audit_round(container_of(app)) == 1
        assert [i["type"] for i in (await events_of(client, tokens))["items"]] == ["login_succeeded"]
        metrics = (await client.get("/metrics")).text
    assert 'user_service_housekeeping_purged_total{kind="security_event"} 1.0' in metrics
    assert 'user_service_audit_events_total{type="login_succeeded"} 1.0' in metrics
