"""What the fault tests on the real process (tests/integration/test_faults_*.py) share:
the service without its abuse protections, the endpoints they load, and what a shed or
refused answer looks like.

tests/integration/test_lifecycle.py covers readiness following the database, the drain of
in-flight logins and liveness under a saturated (not overflowing) pool; these go further.
"""

from __future__ import annotations

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
