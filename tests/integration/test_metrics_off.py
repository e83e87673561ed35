"""USER_SERVICE_METRICS__ENABLED=false: an operator who scrapes nothing still gets the
whole API, with no /metrics to expose, and every event still logged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.settings import MetricsSettings, Settings
from testkit.live_server import serve
from tests.integration.helpers import AUTH, ME, PASSWORD, USERS, Client, bearer, login, make_user, register


@pytest.fixture
async def unmetered(settings: Settings, db_engine: AsyncEngine) -> AsyncIterator[Client]:
    quiet = settings.model_copy(update={"metrics": MetricsSettings(enabled=False)})
    async with serve(create_app(quiet)) as client:
        yield client


async def test_there_is_no_metrics_endpoint(unmetered: Client) -> None:
    assert (await unmetered.get("/metrics")).status_code == 404


async def test_every_account_flow_works_without_metrics(unmetered: Client, db_engine: AsyncEngine) -> None:
    client = unmetered
    admin = await make_user(client, db_engine, role="admin")
    user = await make_user(client, db_engine)
    assert (await register(client, user["username"])).status_code == 409
    assert (await login(client, user["username"], "not-the-password-1")).status_code == 401
    assert (await login(client, "nobody-by-this-name", "not-the-password-1")).status_code == 401

    pair = (await login(client, user["username"])).json()
    rotated = await client.post(f"{AUTH}/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200
    # Reusing the spent token ends the family: detected and refused.
    assert (await client.post(f"{AUTH}/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401
    change = {"current_password": PASSWORD, "new_password": "saffron-kettle-93-lantern"}
    assert (await client.put(f"{ME}/password", json=change, headers=user["headers"])).status_code == 204

    target = f"{USERS}/{user['id']}"
    promoted = await client.patch(target, json={"role": "moderator"}, headers=admin["headers"])
    assert promoted.status_code == 200
    assert (await client.patch(target, json={"is_active": False}, headers=admin["headers"])).status_code == 200
    assert (await client.patch(target, json={"is_active": True}, headers=admin["headers"])).status_code == 200
    assert (await client.delete(target, headers=admin["headers"])).status_code == 204
    assert (await login(client, user["username"], "saffron-kettle-93-lantern")).status_code == 401


async def test_the_login_throttle_works_without_metrics(unmetered: Client, db_engine: AsyncEngine) -> None:
    user = await make_user(unmetered, db_engine)
    statuses = [(await login(unmetered, user["username"], "not-the-password-1")).status_code for _ in range(7)]
    # Five free failures (the default), then the name is blocked.
    assert statuses[:5] == [401] * 5
    assert 429 in statuses[5:]
    blocked = await login(unmetered, user["username"])
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) >= 1
    assert (await unmetered.get(ME, headers=bearer(user["tokens"]))).status_code == 200
