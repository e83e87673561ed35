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

import hashlib
import ipaddress
import re
import time
from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.stores.base import Store

from app.settings import RateLimitSettings, parse_rate

# Handlers name their policy with opt={RATE_LIMIT_OPT: "login"}.
RATE_LIMIT_OPT = "rate_limit"
MAIL_REQUEST_POLICY = "mail_request"
LINK_CONFIRM_POLICY = "link_confirm"
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


def route_policies(request: Request[Any, Any, Any]) -> tuple[str, ...]:
    """The policies a handler names: one (``opt={RATE_LIMIT_OPT: "login"}``) or several (a
    tuple: an email change is both a password check and a mail request)."""
    named = request.route_handler.opt.get(RATE_LIMIT_OPT)
    if isinstance(named, str):
        return (named,)
    if isinstance(named, tuple):
        return tuple(policy for policy in named if isinstance(policy, str))
    return ()


def route_policy(request: Request[Any, Any, Any]) -> str | None:
    """The handler's first policy: the label its 429s are counted under."""
    policies = route_policies(request)
    return policies[0] if policies else None


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
    policy: str, rate: str, path_prefixes: tuple[str, ...], identifier: Callable[[Request[Any, Any, Any]], str]
) -> RateLimitConfig:
    # A coroutine function on purpose: Litestar runs a plain function given here on a worker
    # thread (sync_to_thread), which cost every login five thread hand-overs, one per policy.
    async def applies(request: Request[Any, Any, Any]) -> bool:
        return policy in route_policies(request)

    return RateLimitConfig(
        rate_limit=parse_rate(rate),
        check_throttle_handler=applies,
        identifier_for_request=identifier,
        store=STORE_NAME,
        # Paths outside the prefix skip the middleware on a regex match, before it builds a
        # request and looks up its store: GET /users/me pays nothing for three policies.
        # (Written so that it does not match "/" alone, which Litestar would take for a
        # pattern that excludes everything and warn about.)
        exclude=[f"^/(?!(?:{'|'.join(re.escape(prefix.strip('/')) for prefix in path_prefixes)})(?:/|$))."],
    )


def rate_limit_middleware(settings: RateLimitSettings, *, path_prefixes: tuple[str, ...]) -> list[DefineMiddleware]:
    """The per-address middleware for every policy; only handlers under ``path_prefixes``
    can have one. Goes before (outside) the authentication."""
    if not settings.enabled:
        return []
    policies = {
        "login": settings.login,
        "register": settings.registration,
        "refresh": settings.refresh,
        MAIL_REQUEST_POLICY: settings.mail_request,
        LINK_CONFIRM_POLICY: settings.link_confirm,
    }
    return [
        _policy_config(policy, rate, path_prefixes, _by_client_address(policy)).middleware
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
    return [_policy_config(policy, settings.password_check, (path_prefix,), _by_account(policy)).middleware]


_WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class PerAddressMailLimit:
    """How many mails one target address may be sent through the mailed-link flows per
    window (``RATE_LIMITS__MAIL_PER_ADDRESS``), whoever asks from wherever.

    A fixed-window count in the app's ``rate_limit`` store (memory, or Redis shared by the
    replicas), keyed by a digest of the address's key: the store never holds an address.
    Like Litestar's middleware it reads, then writes: two replicas racing on one address
    can each admit one more request, which bounds the flood as well."""

    def __init__(self, store: Store, rate: str, *, enabled: bool = True) -> None:
        self._store = store
        unit, self._limit = parse_rate(rate)
        self._window = _WINDOW_SECONDS[unit]
        self._enabled = enabled

    async def hit(self, address_key: str) -> int | None:
        """Count one request for the address; the seconds to wait if it is over the limit."""
        if not self._enabled:
            return None
        now = int(time.time())
        window = now // self._window
        digest = hashlib.sha256(address_key.encode("utf-8", "surrogatepass")).hexdigest()
        key = f"mail_per_address:{digest}:{window}"
        raw = await self._store.get(key)
        count = int(raw) if raw else 0
        if count >= self._limit:
            return max(1, (window + 1) * self._window - now)
        await self._store.set(key, str(count + 1).encode(), expires_in=self._window)
        return None
