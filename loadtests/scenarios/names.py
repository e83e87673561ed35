"""Request names as Locust records them: route templates, never raw URLs.

Locust keys its statistics by (method, name); the gates in ``loadtests/slo.toml`` name
an endpoint as ``"METHOD name"``, e.g. ``"GET /api/v1/users/{user_id}"``. A bracketed
suffix marks a variant that must not be mixed into the endpoint's own numbers:

- ``[wrong password]``: a login that is meant to fail; its expected 401 is a success.
- ``[search]``, ``[filter]``: the user list with ``q=`` or with ``role``/``is_active``.
- ``[shed]``: a 503 with Retry-After because the hashing pool was full. Recorded as a
  success under its own name (so it is not an error), and counted by the shed-ratio gate.
"""

from __future__ import annotations

SHED_SUFFIX = " [shed]"
WRONG_PASSWORD_SUFFIX = " [wrong password]"

LOGIN = "/api/v1/auth/login"
LOGIN_WRONG_PASSWORD = LOGIN + WRONG_PASSWORD_SUFFIX
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
REGISTER = "/api/v1/auth/register"
ME = "/api/v1/users/me"
USERS = "/api/v1/users"
USERS_SEARCH = USERS + " [search]"
USERS_FILTER = USERS + " [filter]"
USER = "/api/v1/users/{user_id}"

# Every (method, name) a scenario can record, shed variants aside.
ENDPOINTS: frozenset[str] = frozenset(
    {
        f"POST {LOGIN}",
        f"POST {LOGIN_WRONG_PASSWORD}",
        f"POST {REFRESH}",
        f"POST {LOGOUT}",
        f"POST {REGISTER}",
        f"GET {ME}",
        f"GET {USERS}",
        f"GET {USERS_SEARCH}",
        f"GET {USERS_FILTER}",
        f"GET {USER}",
    }
)
# The requests that hash a password and so may be shed.
HASHING = frozenset({f"POST {LOGIN}", f"POST {LOGIN_WRONG_PASSWORD}", f"POST {REGISTER}"})


def shed(name: str) -> str:
    return name + SHED_SUFFIX


def is_shed(name: str) -> bool:
    return name.endswith(SHED_SUFFIX)
