"""Per-account back-off after failed logins.

Every account name gets ``free_attempts`` failures for nothing; after that each failure
blocks the name for a delay that doubles up to a cap (``LoginThrottleSettings``). A
blocked name is answered 429 with Retry-After before any password work is done.

The counter is keyed by the *name as typed* (normalised), hashed, never by the account it
resolves to. So an unknown name is throttled exactly like a real one, and the throttle
tells an attacker nothing: neither that an account exists, nor that a username and an
email belong together. The price is that a username and its email are two counters.

The state lives where every replica sees it: PostgreSQL (``login_throttle``) by default,
Redis when ``USER_SERVICE_REDIS_URL`` is set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.dialects import SUPPORTED, upsertable_insert
from app.db.models import LoginThrottleEntry
from app.settings import LoginThrottleSettings

_Entry = LoginThrottleEntry


@dataclass(frozen=True, slots=True)
class ThrottleState:
    failures: int
    retry_after_seconds: int

    @property
    def blocked(self) -> bool:
        return self.retry_after_seconds > 0


CLEAR = ThrottleState(failures=0, retry_after_seconds=0)


def throttle_key(login_name: str) -> str:
    # Lower case, as the database compares names: "Alice" and "alice" are one account.
    return hashlib.sha256(login_name.lower().encode()).hexdigest()


def _seconds_until(moment: dt.datetime | None, now: dt.datetime) -> int:
    if moment is None or moment <= now:
        return 0
    return math.ceil((moment - now).total_seconds())


@dataclass(frozen=True, slots=True)
class CountedFailure:
    """What one failed login did to its name's counter."""

    refused: bool  # the name was already blocked: nothing counted
    failures: int
    retry_after_seconds: int  # refused: until the block ends; else: the block this failure started


class ThrottleStore(Protocol):
    async def state(self, key: str, now: dt.datetime) -> ThrottleState: ...

    async def record_failure(self, key: str, now: dt.datetime) -> CountedFailure: ...

    async def clear(self, key: str) -> None: ...

    async def forget_stale(self, now: dt.datetime) -> int: ...


class DatabaseThrottleStore:
    """One row per throttled name; each statement runs in its own short transaction on
    the engine, never inside the request's session (whose connection must not be held
    while the password is hashed)."""

    def __init__(self, engine: AsyncEngine, settings: LoginThrottleSettings) -> None:
        self._engine = engine
        self._settings = settings
        if engine.dialect.name not in SUPPORTED:
            raise ValueError(f"the login throttle supports PostgreSQL and SQLite, not {engine.dialect.name}")

    async def state(self, key: str, now: dt.datetime) -> ThrottleState:
        query = select(_Entry.failures, _Entry.last_failure_at, _Entry.blocked_until).where(_Entry.key == key)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None or self._is_stale(row.last_failure_at, now):
            return CLEAR
        return ThrottleState(row.failures, _seconds_until(row.blocked_until, now))

    async def record_failure(self, key: str, now: dt.datetime) -> CountedFailure:
        stale_before = now - dt.timedelta(seconds=self._settings.forget_after_seconds)
        blocked = _Entry.blocked_until > now
        # One upsert checks and counts: it locks the row, so of concurrent failures on one
        # name each sees the count (and the block) the ones before it left. A blocked name
        # is left as it is (a refused attempt neither counts nor lengthens the block).
        values = {"key": key, "failures": 1, "last_failure_at": now, "blocked_until": None}
        counted = {
            "failures": case(
                (blocked, _Entry.failures), (_Entry.last_failure_at < stale_before, 1), else_=_Entry.failures + 1
            ),
            "last_failure_at": case((blocked, _Entry.last_failure_at), else_=now),
        }
        returning = (_Entry.failures, _Entry.blocked_until)
        upsert = (
            upsertable_insert(self._engine.dialect.name, _Entry)
            .values(values)
            .on_conflict_do_update(index_elements=[_Entry.key], set_=counted)
            .returning(*returning)
        )
        async with self._engine.begin() as conn:
            failures, blocked_until = (await conn.execute(upsert)).one()
            if (remaining := _seconds_until(blocked_until, now)) > 0:
                return CountedFailure(refused=True, failures=failures, retry_after_seconds=remaining)
            delay = self._settings.delay_after(failures)
            if delay:
                # In the same transaction: the next failure waits for the row and sees it.
                block = update(_Entry).where(_Entry.key == key).values(blocked_until=now + dt.timedelta(seconds=delay))
                await conn.execute(block)
        return CountedFailure(refused=False, failures=failures, retry_after_seconds=delay)

    async def clear(self, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(_Entry).where(_Entry.key == key))

    async def forget_stale(self, now: dt.datetime) -> int:
        stale_before = now - dt.timedelta(seconds=self._settings.forget_after_seconds)
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(_Entry).where(_Entry.last_failure_at < stale_before))
        return result.rowcount or 0

    def _is_stale(self, last_failure_at: dt.datetime, now: dt.datetime) -> bool:
        return last_failure_at < now - dt.timedelta(seconds=self._settings.forget_after_seconds)


# The check, the count and the block in one atomic step, as the database store's upsert.
# KEYS: failures, blocked. ARGV: forget_after, free_attempts, base_delay, max_delay.
# Returns {failures, milliseconds (left of the block, or of the block just started), refused}.
_REDIS_ATTEMPT = """
local left = redis.call('PTTL', KEYS[2])
if left > 0 then
  return {tonumber(redis.call('GET', KEYS[1]) or '0'), left, 1}
end
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
local beyond = failures - tonumber(ARGV[2])
if beyond <= 0 then
  return {failures, 0, 0}
end
local delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(beyond - 1, 32))
delay = math.floor(delay)
redis.call('SET', KEYS[2], '1', 'EX', delay)
return {failures, delay * 1000, 0}
"""


class RedisThrottleStore:
    """Two keys per name: the failure count, which expires ``forget_after_seconds`` after
    the last failure, and a block marker, which expires when the block ends. Redis's own
    expiry does the clean-up."""

    PREFIX = "user-service:login-throttle:"

    def __init__(self, redis: Redis, settings: LoginThrottleSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._attempt = redis.register_script(_REDIS_ATTEMPT)

    def _keys(self, key: str) -> tuple[str, str]:
        return f"{self.PREFIX}failures:{key}", f"{self.PREFIX}blocked:{key}"

    async def state(self, key: str, now: dt.datetime) -> ThrottleState:
        failures_key, blocked_key = self._keys(key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(failures_key)
            pipe.pttl(blocked_key)
            failures, blocked_ms = await pipe.execute()
        return ThrottleState(int(failures or 0), math.ceil(max(int(blocked_ms), 0) / 1000))

    async def record_failure(self, key: str, now: dt.datetime) -> CountedFailure:
        policy = self._settings
        failures, milliseconds, refused = await self._attempt(
            keys=self._keys(key),
            args=[
                policy.forget_after_seconds,
                policy.free_attempts,
                policy.base_delay_seconds,
                policy.max_delay_seconds,
            ],
        )
        return CountedFailure(
            refused=bool(refused), failures=int(failures), retry_after_seconds=math.ceil(int(milliseconds) / 1000)
        )

    async def clear(self, key: str) -> None:
        await self._redis.delete(*self._keys(key))

    async def forget_stale(self, now: dt.datetime) -> int:
        return 0  # keys expire by themselves


NOT_COUNTED = CountedFailure(refused=False, failures=0, retry_after_seconds=0)


class LoginThrottle:
    """The login use case's view: is this name blocked, and what a failure or a success
    does to it. Disabled, it answers "not blocked" and stores nothing; so does a name that
    cannot belong to any account (None: control characters)."""

    def __init__(self, store: ThrottleStore, settings: LoginThrottleSettings) -> None:
        self._store = store
        self._settings = settings

    async def state(self, login_name: str | None) -> ThrottleState:
        if not self._settings.enabled or not login_name:
            return CLEAR
        return await self._store.state(throttle_key(login_name), _now())

    async def record_failure(self, login_name: str | None) -> CountedFailure:
        """Count a failed login against its name (atomically: concurrent failures on every
        replica are all counted, and one that finds the name already blocked by another is
        not), starting a block once the free attempts are used up.

        Failures are counted after the hash, not before: counting every attempt up front
        closed the window for concurrent guesses, but it also refused a user's own
        concurrent logins with the right password (six devices at once got 429s). The price
        is that guesses already in flight when a block starts still finish: at most the
        hashing pool and its queue (pool_size + queue_size) per replica."""
        if not self._settings.enabled or not login_name:
            return NOT_COUNTED
        return await self._store.record_failure(throttle_key(login_name), _now())

    async def clear(self, login_name: str | None) -> None:
        if self._settings.enabled and login_name:
            await self._store.clear(throttle_key(login_name))

    async def forget_stale(self) -> int:
        return await self._store.forget_stale(_now())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
