"""Whether the shared store (Redis) answers, as the request path and a background probe
see it; the rate limits and the login throttle consult it to choose between Redis and
their fallbacks.

After a failure the store is skipped for ``RETRY_SECONDS``: a dead or unreachable Redis
then costs one failed operation per replica every few seconds, not a connect timeout on
every request. The probe (``probe_forever``, run by the lifespan) pings it meanwhile and
brings it back as soon as it answers, and keeps ``user_service_shared_store_up`` true
while no request uses Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from app.observability.events import SecurityEvents

# What a lost, refused or timed-out Redis raises (redis-py wraps most in RedisError; a
# socket error can surface as OSError).
SHARED_STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)

_T = TypeVar("_T")

RETRY_SECONDS = 5.0
PROBE_SECONDS = 2.0


class SharedStoreHealth:
    def __init__(self, events: SecurityEvents, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self._events = events
        self._retry_seconds = retry_seconds
        self._up: bool | None = None  # unknown until the first answer
        self._skip_until = 0.0

    @property
    def usable(self) -> bool:
        """Worth trying now: up, unknown, or down long enough ago to try again."""
        return self._up is not False or time.monotonic() >= self._skip_until

    async def call(self, store: str, shared: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]) -> _T:
        """``shared()`` while the shared store is usable; ``fallback()`` when it is not, or
        when ``shared()`` fails on it (a failure counted against ``store``)."""
        if self.usable:
            try:
                result = await shared()
            except SHARED_STORE_ERRORS as exc:
                self.failed(store, exc)
            else:
                self.succeeded()
                return result
        return await fallback()

    def failed(self, store: str | None, error: BaseException) -> None:
        """``store``: whose operation fell back (counted); None for the probe (not counted:
        the counter is of requests served by a fallback)."""
        self._events.shared_store_failed(store, error, was_up=self._up is not False)
        self._up = False
        self._skip_until = time.monotonic() + self._retry_seconds

    def succeeded(self) -> None:
        if self._up is not True:
            self._events.shared_store_available(was_up=self._up)
            self._up = True

    async def probe_forever(self, ping: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await ping()
            except SHARED_STORE_ERRORS as exc:
                self.failed(None, exc)
            else:
                self.succeeded()
            await asyncio.sleep(PROBE_SECONDS)
