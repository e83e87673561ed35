"""What the fault tests on the real process (tests/integration/test_faults_*.py) share:
the service without its abuse protections, the endpoints they load, and what a shed or
refused answer looks like.

tests/integration/test_lifecycle.py covers readiness following the database, the drain of
in-flight logins and liveness under a saturated (not overflowing) pool; these go further.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import httpx
from sqlalchemy.engine import make_url

from testkit.server_process import ServerProcess
from testkit.tcp_proxy import ThreadedProxy
from tests.integration.helpers import PASSWORD

# These tests are about capacity and the database, not the abuse protections.
UNTHROTTLED = {"USER_SERVICE_RATE_LIMITS__ENABLED": "false", "USER_SERVICE_LOGIN_THROTTLE__ENABLED": "false"}
REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"


def is_problem(response: httpx.Response, status: int, kind: str) -> bool:
    return (
        response.status_code == status
        and response.headers.get("content-type", "").startswith("application/problem+json")
        and response.json()["type"].endswith("/" + kind)
        and int(response.headers.get("retry-after", "0")) >= 1
    )


def register_body(username: str) -> dict[str, str]:
    return {"username": username, "email": f"{username}@example.com", "password": PASSWORD}


@contextlib.contextmanager
def proxied_server(
    server_process: Callable[..., ServerProcess], database_url: str, **env: str
) -> Iterator[tuple[ServerProcess, ThreadedProxy]]:
    real = make_url(database_url)
    with ThreadedProxy(real.host or "127.0.0.1", real.port or 5432) as proxy:
        via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        server = server_process(USER_SERVICE_DB__URL=via_proxy, **env).start()
        try:
            yield server, proxy
        finally:
            server.stop()


async def accounts_in_parallel(base_url: str, prefix: str, count: int) -> None:
    """``count`` people at once, each through a session: register, log in, read /me and the
    sessions, refresh, log out; every step's statements interleave with the others'."""

    async def life(client: httpx.AsyncClient, n: int) -> None:
        name = f"{prefix}{n}"
        registered = await client.post(REGISTER, json=register_body(name))
        assert registered.status_code == 201, registered.text
        login = await client.post(LOGIN, json={"username": name, "password": PASSWORD})
        assert login.status_code == 200, login.text
        tokens = login.json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        me = await client.get("/api/v1/users/me", headers=bearer)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == name
        sessions = await client.get("/api/v1/users/me/sessions", headers=bearer)
        assert sessions.status_code == 200, sessions.text
        refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        logout = await client.post("/api/v1/auth/logout", json={"refresh_token": refreshed.json()["refresh_token"]})
        assert logout.status_code == 204, logout.text

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        await asyncio.gather(*(life(client, n) for n in range(count)))
