"""The authenticated caller remembered for a second (app/accounts/callers.py), and what the
contract still promises with it: every change that ends a caller's access takes effect on
the next request on the replica that made it, and within the cache's lifetime on others
(two app instances on one database here, and two worker processes of one server)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts import callers as callers_module
from app.accounts.callers import LiveCallers
from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from testkit.server_process import ServerProcess
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, ME, USERS, Client, bearer, login, make_user, register, unique_name

Change = Callable[[Client, dict[str, Any], dict[str, Any]], Awaitable[httpx.Response]]


async def _logout(client: Client, user: dict[str, Any], admin: dict[str, Any]) -> httpx.Response:
    return await client.post(f"{AUTH}/logout", json={"refresh_token": user["tokens"]["refresh_token"]})


async def _end_own_session(client: Client, user: dict[str, Any], admin: dict[str, Any]) -> httpx.Response:
    sessions = (await client.get(f"{ME}/sessions", headers=user["headers"])).json()["items"]
    return await client.delete(f"{ME}/sessions/{sessions[0]['id']}", headers=user["headers"])


async def _deactivate(client: Client, user: dict[str, Any], admin: dict[str, Any]) -> httpx.Response:
    return await client.patch(f"{USERS}/{user['id']}", json={"is_active": False}, headers=admin["headers"])


async def _delete(client: Client, user: dict[str, Any], admin: dict[str, Any]) -> httpx.Response:
    return await client.delete(f"{USERS}/{user['id']}", headers=admin["headers"])


async def _admin_ends_sessions(client: Client, user: dict[str, Any], admin: dict[str, Any]) -> httpx.Response:
    return await client.delete(f"{USERS}/{user['id']}/sessions", headers=admin["headers"])


@pytest.mark.parametrize(
    "change",
    [_logout, _end_own_session, _deactivate, _delete, _admin_ends_sessions],
    ids=["logout", "end-own-session", "deactivation", "deletion", "admin-ends-sessions"],
)
async def test_a_change_that_ends_access_is_seen_by_the_next_request_here(
    client: Client, db_engine: AsyncEngine, change: Change
) -> None:
    user = await make_user(client, db_engine)
    admin = await make_user(client, db_engine, role="admin")
    for _ in range(3):  # remembered now
        assert (await client.get(ME, headers=user["headers"])).status_code == 200
    changed = await change(client, user, admin)
    assert changed.status_code in (200, 204), changed.text
    assert (await client.get(ME, headers=user["headers"])).status_code == 401


async def test_a_role_change_is_seen_by_the_next_request_here(client: Client, db_engine: AsyncEngine) -> None:
    moderator = await make_user(client, db_engine, role="moderator")
    admin = await make_user(client, db_engine, role="admin")
    assert (await client.get(USERS, headers=moderator["headers"])).status_code == 200
    demoted = await client.patch(f"{USERS}/{moderator['id']}", json={"role": "user"}, headers=admin["headers"])
    assert demoted.status_code == 200, demoted.text
    assert (await client.get(USERS, headers=moderator["headers"])).status_code == 403
    assert (await client.get(ME, headers=moderator["headers"])).json()["role"] == "user"


async def test_a_profile_change_is_read_back_at_once(client: Client, db_engine: AsyncEngine) -> None:
    user = await make_user(client, db_engine)
    assert (await client.get(ME, headers=user["headers"])).json()["full_name"] is None
    patched = await client.patch(ME, json={"full_name": "Ada Lovelace"}, headers=user["headers"])
    assert patched.status_code == 200
    assert (await client.get(ME, headers=user["headers"])).json()["full_name"] == "Ada Lovelace"


async def test_another_replica_sees_a_logout_within_the_cache_lifetime(
    settings: Settings, signing_key_file: Path
) -> None:
    """Two instances of the service on one database, as two pods are: a logout on one is
    refused by the other once the other's remembered answer has expired."""
    lifetime = 0.5
    replica = make_settings(settings.db.url, signing_key_file, tokens={"caller_cache_seconds": lifetime})
    async with serve(create_app(replica)) as first, serve(create_app(replica)) as second:
        name = unique_name()
        await register(first, name)
        tokens = (await login(first, name)).json()
        assert (await second.get(ME, headers=bearer(tokens))).status_code == 200  # remembered there
        assert (await first.post(f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]})).status_code == 204
        assert (await first.get(ME, headers=bearer(tokens))).status_code == 401
        await asyncio.sleep(lifetime + 0.1)
        assert (await second.get(ME, headers=bearer(tokens))).status_code == 401


async def test_with_the_cache_off_every_request_reads(settings: Settings, signing_key_file: Path) -> None:
    off = make_settings(settings.db.url, signing_key_file, tokens={"caller_cache_seconds": 0})
    async with serve(create_app(off)) as first, serve(create_app(off)) as second:
        name = unique_name()
        await register(first, name)
        tokens = (await login(first, name)).json()
        assert (await second.get(ME, headers=bearer(tokens))).status_code == 200
        assert (await first.post(f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]})).status_code == 204
        assert (await second.get(ME, headers=bearer(tokens))).status_code == 401


async def test_a_read_under_way_across_a_change_is_not_remembered(
    db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that began before a change committed may carry the old row: it is answered
    (as it would have been a moment earlier) but not remembered."""
    account: Any = object()  # what the read answered; its fields do not matter here
    calls = 0
    callers = LiveCallers(db_engine, ttl_seconds=60, max_entries=10)

    async def read_while_it_changes(engine: AsyncEngine, user_id: UUID, session_id: UUID) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            callers.forget_all()  # the change lands while this read is on the wire
        return account

    monkeypatch.setattr(callers_module, "read_live_caller", read_while_it_changes)
    ids = (UUID(int=1), UUID(int=2))
    assert await callers.get(*ids) is account
    assert await callers.get(*ids) is account
    assert calls == 2  # the first answer was not kept
    assert await callers.get(*ids) is account
    assert calls == 2  # the second was


class _HeldRead:
    """A stand-in for the database read that answers only when released, and counts."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.account: Any = object()

    async def __call__(self, engine: AsyncEngine, user_id: UUID, session_id: UUID) -> Any:
        self.calls += 1
        await self.release.wait()
        return self.account


@pytest.fixture
def read(monkeypatch: pytest.MonkeyPatch) -> _HeldRead:
    """The caller read, held until released and counted, in place of the database's."""
    held = _HeldRead()
    monkeypatch.setattr(callers_module, "read_live_caller", held)
    return held


async def test_requests_of_one_caller_share_a_read_under_way(db_engine: AsyncEngine, read: _HeldRead) -> None:
    """When the remembered answer expires under a busy client, its requests make one read,
    not one each (the burst was the p99 of GET /users/me at 64 connections)."""
    callers = LiveCallers(db_engine, ttl_seconds=60, max_entries=10)
    ids = (UUID(int=1), UUID(int=2))
    waiting = [asyncio.create_task(callers.get(*ids)) for _ in range(20)]
    await asyncio.sleep(0.01)
    read.release.set()
    assert all(answer is read.account for answer in await asyncio.gather(*waiting))
    assert read.calls == 1


async def test_a_request_after_a_change_does_not_share_a_read_from_before_it(
    db_engine: AsyncEngine, read: _HeldRead
) -> None:
    callers = LiveCallers(db_engine, ttl_seconds=60, max_entries=10)
    ids = (UUID(int=1), UUID(int=2))
    before = asyncio.create_task(callers.get(*ids))
    await asyncio.sleep(0.01)
    callers.forget_all()  # a logout committed while the first read is on the wire
    after = asyncio.create_task(callers.get(*ids))
    await asyncio.sleep(0.01)
    read.release.set()
    await asyncio.gather(before, after)
    assert read.calls == 2


async def test_a_cancelled_read_leaves_the_others_to_read_for_themselves(
    db_engine: AsyncEngine, read: _HeldRead
) -> None:
    callers = LiveCallers(db_engine, ttl_seconds=60, max_entries=10)
    ids = (UUID(int=1), UUID(int=2))
    first = asyncio.create_task(callers.get(*ids))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(callers.get(*ids))
    await asyncio.sleep(0.01)
    first.cancel()  # its client went away
    await asyncio.sleep(0.01)
    read.release.set()
    assert await second is read.account
    assert first.cancelled()
    assert read.calls == 2


@pytest.mark.slow
def test_two_workers_refuse_a_logged_out_token_on_the_next_request(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """One server, two worker processes, each having remembered the caller: a logout
    handled by either is seen by both on the next request (the shared generation)."""
    server = server_process(
        USER_SERVICE_SERVER__WORKERS="2",
        USER_SERVICE_TOKENS__CALLER_CACHE_SECONDS="30",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    ).start()
    try:
        base = server.base_url
        name = unique_name()
        body = {"username": name, "email": f"{name}@example.com", "password": "violet-tangerine-47-harbor"}
        assert httpx.post(f"{base}{AUTH}/register", json=body).status_code == 201
        tokens = httpx.post(f"{base}{AUTH}/login", json={"username": name, "password": body["password"]}).json()
        # A new connection each time, so that both workers answer and remember.
        fresh = {**bearer(tokens), "Connection": "close"}
        assert all(httpx.get(f"{base}{ME}", headers=fresh).status_code == 200 for _ in range(20))
        logout = httpx.post(f"{base}{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]})
        assert logout.status_code == 204
        assert [httpx.get(f"{base}{ME}", headers=fresh).status_code for _ in range(20)] == [401] * 20
    finally:
        server.stop()
