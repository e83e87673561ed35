"""What the fault tests on the real process (tests/integration/test_faults_*.py) share:
the service without its abuse protections, the endpoints they load, and what a shed or
refused answer looks like.

tests/integration/test_lifecycle.py covers readiness following the database, the drain of
in-flight logins and liveness under a saturated (not overflowing) pool; these go further.
"""

from __future__ import annotations

import httpx

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
