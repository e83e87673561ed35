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

A check is reserved before the hash and settled after it, and both happen in the store
that granted the reservation: a reservation taken in PostgreSQL during an outage is
settled there even if Redis is back by then (or its in-flight mark would hold the name
until the lease lapses). A reservation taken in Redis whose settlement finds Redis away
is settled in PostgreSQL instead: a checked failure is still counted (and can start a
block there), a success still clears; the Redis mark lapses with its lease.

Kept out of app/identity/throttle.py on purpose: it wraps any ``ThrottleStore``, so the
throttle's own algorithm can change without touching this policy. Every method a
``ThrottleStore`` gains must be delegated the same way (try Redis when usable, fall back
to the database on a Redis error, never let the Redis error out).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.identity.throttle import CountedFailure, Outcome, Reservation, ThrottleState, ThrottleStore
from app.observability.shared_store import SharedStoreHealth

_T = TypeVar("_T")
_NOTHING_COUNTED = CountedFailure(failures=0, block_seconds=0)


class FailoverThrottleStore:
    def __init__(self, shared: ThrottleStore, fallback: ThrottleStore, health: SharedStoreHealth) -> None:
        self._shared = shared
        self._fallback = fallback
        self._health = health
        # This process's reservations not yet settled, per key: how many each store granted.
        self._in_shared: Counter[str] = Counter()
        self._in_fallback: Counter[str] = Counter()

    async def _call(self, shared: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]) -> _T:
        return await self._health.call("login_throttle", shared, fallback)

    async def state(self, key: str, now: dt.datetime) -> ThrottleState:
        return await self._call(lambda: self._shared.state(key, now), lambda: self._fallback.state(key, now))

    async def reserve(self, key: str, now: dt.datetime) -> Reservation:
        granted_by_shared = False

        async def shared() -> Reservation:
            nonlocal granted_by_shared
            reservation = await self._shared.reserve(key, now)
            granted_by_shared = reservation.granted
            return reservation

        reservation = await self._call(shared, lambda: self._fallback.reserve(key, now))
        if reservation.granted:
            (self._in_shared if granted_by_shared else self._in_fallback)[key] += 1
        return reservation

    async def settle(self, key: str, now: dt.datetime, outcome: Outcome) -> CountedFailure:
        if self._in_fallback[key] > 0:
            _take(self._in_fallback, key)
            return await self._fallback.settle(key, now, outcome)
        _take(self._in_shared, key)

        async def in_fallback() -> CountedFailure:
            # Reserved in Redis, which is away now: the outcome still counts, in PostgreSQL
            # (its release of a check in flight is floored at 0), and the Redis mark lapses
            # with its lease. An abandoned check has nothing to count.
            if outcome is Outcome.ABANDONED:
                return _NOTHING_COUNTED
            return await self._fallback.settle(key, now, outcome)

        return await self._call(lambda: self._shared.settle(key, now, outcome), in_fallback)

    async def clear(self, key: str) -> None:
        # Both: counts left in PostgreSQL by an earlier outage must not come back to
        # life in the next one after the owner has logged in or changed the password.
        await self._call(lambda: self._shared.clear(key), _nothing)
        await self._fallback.clear(key)

    async def forget_stale(self, now: dt.datetime) -> int:
        # Redis expires its own keys; the rows written during outages are the database's.
        return await self._fallback.forget_stale(now)


def _take(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


async def _nothing() -> None:
    return None
