"""The rate-limit store when Redis is configured: Redis while it answers, this process's
memory while it does not (fail open to a per-replica limit, never to no limit).

Why open and not closed: a per-address rate limit is a guard against floods, not the
bound on password guessing (the login throttle is, and it fails over to PostgreSQL, see
app/identity/throttle_failover.py). Refusing every login and registration because Redis
is away would turn a cache outage into a full outage of sign-in; counting in memory keeps
every replica limiting at the configured rate, so an attacker gains at most the replica
count times the budget for as long as the outage lasts, and the alert
(UserServiceSharedStoreDown) says so. Counts do not move between the two: a window that
started in Redis starts again in memory (and back), at most one extra budget per switch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore

from app.observability.shared_store import SharedStoreHealth

_T = TypeVar("_T")


class FailoverStore(Store):
    """A Litestar ``Store`` over ``shared`` (Redis) that serves from ``local`` (memory)
    whenever ``health`` says the shared one is away or an operation on it fails."""

    def __init__(self, shared: Store, local: MemoryStore, health: SharedStoreHealth) -> None:
        self._shared = shared
        self.local = local
        self._health = health

    async def _call(self, shared: Callable[[], Awaitable[_T]], local: Callable[[], Awaitable[_T]]) -> _T:
        return await self._health.call("rate_limit", shared, local)

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        await self._call(
            lambda: self._shared.set(key, value, expires_in), lambda: self.local.set(key, value, expires_in)
        )

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return await self._call(lambda: self._shared.get(key, renew_for), lambda: self.local.get(key, renew_for))

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._shared.delete(key), lambda: self.local.delete(key))

    async def delete_all(self) -> None:
        await self._call(self._shared.delete_all, self.local.delete_all)

    async def exists(self, key: str) -> bool:
        return await self._call(lambda: self._shared.exists(key), lambda: self.local.exists(key))

    async def expires_in(self, key: str) -> int | None:
        return await self._call(lambda: self._shared.expires_in(key), lambda: self.local.expires_in(key))
