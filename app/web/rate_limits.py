"""Rate limits: per client address on the unauthenticated auth endpoints, per account on
the authenticated endpoints that check a password.

Litestar's RateLimitMiddleware does the counting. One instance per policy (login,
register, refresh, password_check), each checking only the handlers whose
``opt["rate_limit"]`` names it and counting under its own key, so a client's
registrations do not use up its logins. The per-account policy sits inside the bearer
authentication (it counts the authenticated account, whatever address it comes from);
the others sit outside it.
The counters live in the app's ``rate_limit`` store: this process's memory, or Redis
(shared by every replica) when ``USER_SERVICE_REDIS_URL`` is set.

The client address is scope["client"], which app/web/client_address.py has already
replaced with the forwarded address when the peer is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig

from app.settings import RateLimitSettings, parse_rate

# Handlers name their policy with opt={RATE_LIMIT_OPT: "login"}.
RATE_LIMIT_OPT = "rate_limit"
STORE_NAME = "rate_limit"


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


# A single IPv6 subscriber is routinely given a whole /64 (RFC 6177) and can send from any
# of its 2**64 addresses, so per-address counting would give one client endless budgets.
IPV6_CLIENT_PREFIX = 64


def rate_limit_subject(address: str) -> str:
    """Whom a request is counted against: the IPv4 address, or the IPv6 /64 it lies in (an
    IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # "unknown", or a test transport's made-up peer
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return address


def route_policy(request: Request[Any, Any, Any]) -> str | None:
    policy = request.route_handler.opt.get(RATE_LIMIT_OPT)
    return policy if isinstance(policy, str) else None


def _by_client_address(policy: str) -> Callable[[Request[Any, Any, Any]], str]:
    def identifier(request: Request[Any, Any, Any]) -> str:
        return f"{policy}:{rate_limit_subject(client_address(request))}"

    return identifier


def _by_account(policy: str) -> Callable[[Request[Any, Any, Any]], str]:
    def identifier(request: Request[Any, Any, Any]) -> str:
        # Runs after the bearer authentication: scope["user"] is the caller's Principal.
        account = getattr(request.scope.get("user"), "id", None)
        return f"{policy}:account:{account}"

    return identifier


def _policy_config(
    policy: str, rate: str, path_prefix: str, identifier: Callable[[Request[Any, Any, Any]], str]
) -> RateLimitConfig:
    def applies(request: Request[Any, Any, Any]) -> bool:
        return route_policy(request) == policy

    return RateLimitConfig(
        rate_limit=parse_rate(rate),
        check_throttle_handler=applies,
        identifier_for_request=identifier,
        store=STORE_NAME,
        # Paths outside the prefix skip the middleware on a regex match, before it builds a
        # request and looks up its store: GET /users/me pays nothing for three policies.
        # (Written so that it does not match "/" alone, which Litestar would take for a
        # pattern that excludes everything and warn about.)
        exclude=[f"^/(?!{re.escape(path_prefix.strip('/'))}/)."],
    )


def rate_limit_middleware(settings: RateLimitSettings, *, path_prefix: str) -> list[DefineMiddleware]:
    """The per-address middleware for every policy; only handlers under ``path_prefix``
    can have one. Goes before (outside) the authentication."""
    if not settings.enabled:
        return []
    policies = {"login": settings.login, "register": settings.registration, "refresh": settings.refresh}
    return [
        _policy_config(policy, rate, path_prefix, _by_client_address(policy)).middleware
        for policy, rate in policies.items()
    ]


PASSWORD_CHECK_POLICY = "password_check"  # noqa: S105 - a policy name


def account_rate_limit_middleware(settings: RateLimitSettings, *, path_prefix: str) -> list[DefineMiddleware]:
    """The per-account middleware for handlers that check the caller's password (a stolen
    access token must not become a fast password oracle). Goes after (inside) the
    authentication, whose Principal it counts."""
    if not settings.enabled:
        return []
    policy = PASSWORD_CHECK_POLICY
    return [_policy_config(policy, settings.password_check, path_prefix, _by_account(policy)).middleware]
