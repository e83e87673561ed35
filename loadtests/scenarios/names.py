"""Request names as Locust records them: route templates, never raw URLs.

Locust keys its statistics by (method, name); the gates in ``loadtests/slo.toml`` name
an endpoint as ``"METHOD name"``, e.g. ``"GET /api/v1/users/{user_id}"``. A bracketed
suffix marks a variant that must not be mixed into the endpoint's own numbers:

- ``[wrong password]``: a login that is meant to fail; its expected 401 is a success.
- ``[mfa required]``: the password step of an account with a second factor; its expected
  403 ``mfa-required`` (with the ``mfa_token`` for ``/login/mfa``) is a success.
- ``[search]``, ``[filter]``: the user list with ``q=`` or with ``role``/``is_active``.
- ``[shed]``: a 503 with Retry-After because the hashing pool was full. Recorded as a
  success under its own name (so it is not an error), and counted by the shed-ratio gate.
- ``[stuffing]``, ``[spraying]``: the attackers' logins, each followed by its outcome
  (``[refused]`` 401, ``[rate-limited]`` and ``[throttled]`` the two kinds of 429,
  ``[shed]``, ``[logged in]``), so the report shows which protection answered.
"""

from __future__ import annotations

SHED_SUFFIX = " [shed]"
# Problem types (the last segment of a problem-details "type") the scenarios tell apart.
SHED_PROBLEM = "hashing-capacity-exceeded"
RATE_LIMITED_PROBLEM = "too-many-requests"
THROTTLED_PROBLEM = "login-throttled"
MFA_REQUIRED_PROBLEM = "mfa-required"
WRONG_PASSWORD_SUFFIX = " [wrong password]"

LOGIN = "/api/v1/auth/login"
LOGIN_WRONG_PASSWORD = LOGIN + WRONG_PASSWORD_SUFFIX
LOGIN_MFA_REQUIRED = LOGIN + " [mfa required]"
LOGIN_MFA = "/api/v1/auth/login/mfa"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
REGISTER = "/api/v1/auth/register"
ME = "/api/v1/users/me"
USERS = "/api/v1/users"
USERS_SEARCH = USERS + " [search]"
USERS_FILTER = USERS + " [filter]"
USER = "/api/v1/users/{user_id}"

# The attacks (loadtests/scenarios/attacks.py): one request name per attack and outcome.
STUFFING = LOGIN + " [stuffing]"
SPRAYING = LOGIN + " [spraying]"
REFUSED = " [refused]"  # 401: the guess was checked (one argon2 verify) and was wrong
RATE_LIMITED = " [rate-limited]"  # 429 too-many-requests: the per-address limit, before any work
THROTTLED = " [throttled]"  # 429 login-throttled: the per-account back-off, before the hash
LOGGED_IN = " [logged in]"  # 200: an attacker got in; the attackers never know a password
ATTACK_OUTCOMES = (REFUSED, RATE_LIMITED, THROTTLED, SHED_SUFFIX, LOGGED_IN)
ATTACKS = (STUFFING, SPRAYING)

# Every (method, name) a scenario can record, shed variants aside.
ENDPOINTS: frozenset[str] = frozenset(
    {
        f"POST {LOGIN}",
        f"POST {LOGIN_WRONG_PASSWORD}",
        f"POST {LOGIN_MFA_REQUIRED}",
        f"POST {LOGIN_MFA}",
        f"POST {REFRESH}",
        f"POST {LOGOUT}",
        f"POST {REGISTER}",
        f"GET {ME}",
        f"GET {USERS}",
        f"GET {USERS_SEARCH}",
        f"GET {USERS_FILTER}",
        f"GET {USER}",
        *(f"POST {attack}{outcome}" for attack in ATTACKS for outcome in ATTACK_OUTCOMES),
    }
)
# The requests that hash a password and so may be shed.
# (/login/mfa does not: the password was verified by the first step.)
HASHING = frozenset({f"POST {LOGIN}", f"POST {LOGIN_WRONG_PASSWORD}", f"POST {LOGIN_MFA_REQUIRED}", f"POST {REGISTER}"})


def shed(name: str) -> str:
    return name + SHED_SUFFIX


def is_shed(name: str) -> bool:
    return name.endswith(SHED_SUFFIX)


def is_recorded(key: str) -> bool:
    """Whether some scenario records "METHOD name" ``key``, its shed variant included."""
    if key in ENDPOINTS:
        return True
    return is_shed(key) and key.removesuffix(SHED_SUFFIX) in HASHING


def attack_outcome(status: int, problem_type: str, has_retry_after: bool) -> str | None:
    """The outcome suffix an attacker's login is recorded under; None when the response
    is none of the expected ones (a 200, a 5xx, a 429 without Retry-After...): a failure.

    A refusal without Retry-After would leave real clients guessing when to come back,
    so it does not count as the protection working.
    """
    if status == 401:
        return REFUSED
    if not has_retry_after:
        return None
    return {
        (429, RATE_LIMITED_PROBLEM): RATE_LIMITED,
        (429, THROTTLED_PROBLEM): THROTTLED,
        (503, SHED_PROBLEM): SHED_SUFFIX,
    }.get((status, problem_type))
