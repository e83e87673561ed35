"""The login throttle's store when Redis is configured: Redis while it answers, PostgreSQL
(``DatabaseThrottleStore``, the store used without Redis) while it does not.

Why neither open nor closed: the throttle is the bound on password guessing per account,
so it must not fail open (a Redis outage, or an attacker who can cause one, would lift the
bound on every replica); and failing closed (503 on every login) would make a cache
outage a sign-in outage. PostgreSQL is shared by every replica and is needed by a login
anyway, so on it the bound still holds across replicas; the throttle is only as down as
the login itself. The price: failures counted in Redis before the outage are not seen in
PostgreSQL (and the other way round after it), so each switch can give a name its free
attempts once more. An attacker cannot flip the switch at will (NetworkPolicy: only the
service's pods reach Redis), and the outage is logged (shared_store_unavailable), counted
and alerted on (UserServiceSharedStoreDown).

Kept out of app/identity/throttle.py on purpose: it wraps any ``ThrottleStore``, so the
throttle's own algorithm can change without touching this policy. Every method a
``ThrottleStore`` gains must be delegated the same way (try Redis when usable, fall back
to the database on a Redis error, never let the Redis error out).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.identity.throttle import CountedFailure, ThrottleState, ThrottleStore
from app.observability.shared_store import SHARED_STORE_ERRORS, SharedStoreHealth

_T = TypeVar("_T")


class FailoverThrottleStore:
    def __init__(self, shared: ThrottleStore, fallback: ThrottleStore, health: SharedStoreHealth) -> None:
        self._shared = shared
        self._fallback = fallback
        self._health = health

    async def _call(self, shared: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]) -> _T:
        if self._health.usable:
            try:
                result = await shared()
            except SHARED_STORE_ERRORS as exc:
                self._health.failed("login_throttle", exc)
            else:
                self._health.succeeded()
                return result
        return await fallback()

    async def state(self, key: str, now: dt.datetime) -> ThrottleState:
        return await self._call(lambda: self._shared.state(key, now), lambda: self._fallback.state(key, now))

    async def record_failure(self, key: str, now: dt.datetime) -> CountedFailure:
        return await self._call(
            lambda: self._shared.record_failure(key, now), lambda: self._fallback.record_failure(key, now)
        )

    async def clear(self, key: str) -> None:
        # Both: counts left in PostgreSQL by an earlier outage must not come back to
        # life in the next one after the owner has logged in or changed the password.
        await self._call(lambda: self._shared.clear(key), _nothing)
        await self._fallback.clear(key)

    async def forget_stale(self, now: dt.datetime) -> int:
        # Redis expires its own keys; the rows written during outages are the database's.
        return await self._fallback.forget_stale(now)


async def _nothing() -> None:
    return None
