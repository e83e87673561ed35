"""Per-subject back-off after failed password checks, with a reservation before the hash.

A subject is what a password is checked for: the name typed at login, or the account
behind a password change. Each gets ``free_attempts`` failures for nothing; after that
each failure blocks it for a delay that doubles up to a cap (``LoginThrottleSettings``).
A blocked subject is answered 429 with Retry-After before any password work is done.

Every check is *reserved* before the hash and *settled* by its outcome, in one atomic
step each, in the store every replica shares:

- while failures plus checks in flight are below ``free_attempts``, checks run side by
  side (a person on several devices, a service account on several pods);
- beyond that, at most one check is in flight per subject across all replicas; the
  others wait for it (a short poll) and then see its outcome: a success frees the
  subject, a failure blocks it;
- every checked failure is counted, and its block starts when it is counted.

So a concurrent burst buys an attacker nothing over a sequential one: the guesses verified
per subject are bounded by ``guesses_verified_bound`` whatever the number of connections
or replicas. A reservation is a lease: a replica that dies mid-check frees it after
``check_lease_seconds``.

The login key is the name as typed (normalised), hashed, never the account it resolves
to: an unknown name is throttled exactly like a real one, and the throttle tells an
attacker nothing. The price is that a username and its email are two counters.

The state lives in PostgreSQL (``login_throttle``) by default, Redis when
``USER_SERVICE_REDIS_URL`` is set.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import and_, bindparam, case, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import ReturningInsert

from app.db.connections import statement_by_statement
from app.db.dialects import SUPPORTED, upsertable_insert
from app.db.models import LoginThrottleEntry
from app.settings import LoginThrottleSettings
from app.web.shedding import waiting_for_something_else

_Entry = LoginThrottleEntry


def throttle_key(login_name: str) -> str:
    # Lower case, as the database compares names: "Alice" and "alice" are one account.
    return hashlib.sha256(login_name.lower().encode()).hexdigest()


def account_throttle_key(user_id: UUID) -> str:
    """The key of checks made for a known account (a password change). The NUL byte cannot
    be typed at login (names with control characters are refused before the throttle), so
    no login name shares this counter and blocks the owner's password change."""
    return hashlib.sha256(f"account\x00{user_id}".encode()).hexdigest()


def guesses_verified_bound(policy: LoginThrottleSettings, window_seconds: float, check_seconds: float = 0.0) -> int:
    """The most password checks an attacker gets verified for one subject in
    ``window_seconds`` starting from a clean count, however many connections and replicas
    they use: the free attempts at once, then one check at a time, each followed by its
    block. ``check_seconds`` is how long one check takes (it delays the next)."""
    checks = policy.free_attempts
    elapsed = check_seconds
    failures = policy.free_attempts
    while True:
        elapsed += policy.delay_after(failures)
        if elapsed > window_seconds:
            return checks
        checks += 1
        failures += 1
        elapsed += check_seconds


@dataclass(frozen=True, slots=True)
class ThrottleState:
    failures: int
    retry_after_seconds: int
    in_flight: int = 0

    @property
    def blocked(self) -> bool:
        return self.retry_after_seconds > 0


CLEAR = ThrottleState(failures=0, retry_after_seconds=0)


class Outcome(StrEnum):
    FAILED = "failed"  # the password was checked and was wrong: counted
    SUCCEEDED = "succeeded"  # checked and right: the count starts again
    ABANDONED = "abandoned"  # never checked (shed, an error): only the reservation ends


@dataclass(frozen=True, slots=True)
class Reservation:
    """The store's answer to "may I check a password for this subject now?"."""

    granted: bool
    failures: int
    retry_after_seconds: int  # > 0: the subject is blocked this long
    token: str = ""  # the grant's identity (the database store's compare-and-set)

    @property
    def blocked(self) -> bool:
        return self.retry_after_seconds > 0


@dataclass(frozen=True, slots=True)
class CountedFailure:
    """What one checked failure did to its subject's counter."""

    failures: int
    block_seconds: int  # the block this failure started (0: still among the free ones)


class ThrottleStore(Protocol):
    async def state(self, key: str, now: dt.datetime) -> ThrottleState: ...

    async def reserve(self, key: str, now: dt.datetime) -> Reservation: ...

    async def settle(self, key: str, now: dt.datetime, outcome: Outcome) -> CountedFailure: ...

    async def clear(self, key: str) -> None: ...

    async def forget_stale(self, now: dt.datetime) -> int: ...


def _seconds_until(moment: dt.datetime | None, now: dt.datetime) -> int:
    if moment is None or moment <= now:
        return 0
    return math.ceil((moment - now).total_seconds())


# The statements' values, typed as their columns so that each database gets them in its
# own form (SQLite stores timestamps as text), and named unlike any column (SQLAlchemy
# reserves a column's name for its own parameter in an INSERT or UPDATE).
_KEY = bindparam("subject", type_=_Entry.key.type)
_NOW = bindparam("at", type_=_Entry.last_failure_at.type)
_STALE_BEFORE = bindparam("stale_before", type_=_Entry.last_failure_at.type)
_LEASE_UNTIL = bindparam("lease_end", type_=_Entry.lease_until.type)
_BLOCK_UNTIL = bindparam("block_end", type_=_Entry.blocked_until.type)
_TOKEN = bindparam("grant", type_=_Entry.grant_token.type)


class DatabaseThrottleStore:
    """One row per subject with failures or checks in flight; each statement runs in its
    own short transaction on the engine, never inside the request's session (whose
    connection must not be held while the password is hashed).

    Each step is a single upsert or update, so the row lock (PostgreSQL) or the database
    write lock (SQLite) makes it atomic: no SELECT-then-write window between replicas.

    The statements are built once, with bound values: every login reserves and settles, and
    building these CASE-laden upserts anew took about 1 ms of event-loop CPU per login."""

    def __init__(self, engine: AsyncEngine, settings: LoginThrottleSettings) -> None:
        self._engine = engine
        self._settings = settings
        dialect = engine.dialect.name
        if dialect not in SUPPORTED:
            raise ValueError(f"the login throttle supports PostgreSQL and SQLite, not {dialect}")
        self._state = select(
            _Entry.failures, _Entry.last_failure_at, _Entry.blocked_until, _Entry.in_flight, _Entry.lease_until
        ).where(_Entry.key == _KEY)
        self._reserve = _reserve_statement(dialect, settings.free_attempts)
        self._count_failure = _count_failure_statement(dialect)
        self._block = update(_Entry).where(_Entry.key == _KEY).values(blocked_until=_BLOCK_UNTIL)
        released = case((_Entry.in_flight > 0, _Entry.in_flight - 1), else_=0)
        # The row goes when this was its only check in flight (a subject with nothing to
        # remember leaves no row, or every user who ever logged in would have one);
        # otherwise only this check is released.
        last_check = or_(_Entry.in_flight <= 1, _Entry.lease_until.is_(None), _Entry.lease_until <= _NOW)
        self._forget = {
            Outcome.SUCCEEDED: delete(_Entry).where(_Entry.key == _KEY, last_check),
            Outcome.ABANDONED: delete(_Entry).where(_Entry.key == _KEY, last_check, _Entry.failures == 0),
        }
        self._release = {
            Outcome.SUCCEEDED: update(_Entry)
            .where(_Entry.key == _KEY)
            .values(in_flight=released, failures=0, blocked_until=None),
            Outcome.ABANDONED: update(_Entry).where(_Entry.key == _KEY).values(in_flight=released),  # failures stay
        }
        self._clear = update(_Entry).where(_Entry.key == _KEY).values(failures=0, blocked_until=None)
        self._forget_cleared = delete(_Entry).where(_Entry.key == _KEY, _Entry.in_flight == 0)

    async def state(self, key: str, now: dt.datetime) -> ThrottleState:
        async with self._engine.connect() as conn:
            row = (await conn.execute(self._state, {"subject": key})).one_or_none()
        if row is None:
            return CLEAR
        failures = 0 if self._is_stale(row.last_failure_at, now) else row.failures
        in_flight = row.in_flight if row.lease_until is not None and row.lease_until > now else 0
        return ThrottleState(failures, _seconds_until(row.blocked_until, now), in_flight)

    async def reserve(self, key: str, now: dt.datetime) -> Reservation:
        token = secrets.token_hex(16)
        values = {
            "subject": key,
            "at": now,
            "stale_before": now - dt.timedelta(seconds=self._settings.forget_after_seconds),
            "lease_end": now + dt.timedelta(seconds=self._settings.check_lease_seconds),
            "grant": token,
        }
        # Each statement commits by itself (app/db/connections.py): it is atomic on its own,
        # and BEGIN and COMMIT round trips would double the throttle's cost on every login.
        async with statement_by_statement(self._engine) as conn:
            row = (await conn.execute(self._reserve, values)).one()
        granted = row.grant_token == token
        retry_after = 0 if granted else _seconds_until(row.blocked_until, now)
        return Reservation(granted=granted, failures=row.failures, retry_after_seconds=retry_after, token=token)

    async def settle(self, key: str, now: dt.datetime, outcome: Outcome) -> CountedFailure:
        if outcome is Outcome.FAILED:
            return await self._settle_failure(key, now)
        # The common case, a successful login, in one statement (the delete).
        async with statement_by_statement(self._engine) as conn:
            if not (await conn.execute(self._forget[outcome], {"subject": key, "at": now})).rowcount:
                await conn.execute(self._release[outcome], {"subject": key})
        return CountedFailure(failures=0, block_seconds=0)

    async def _settle_failure(self, key: str, now: dt.datetime) -> CountedFailure:
        stale_before = now - dt.timedelta(seconds=self._settings.forget_after_seconds)
        async with self._engine.begin() as conn:
            values = {"subject": key, "at": now, "stale_before": stale_before}
            counted = await conn.execute(self._count_failure, values)
            failures, blocked_until = counted.one()
            delay = self._settings.delay_after(failures)
            block_until = now + dt.timedelta(seconds=delay)
            if delay and (blocked_until is None or blocked_until < block_until):
                # In the same transaction (the row is locked): the next reservation sees it.
                await conn.execute(self._block, {"subject": key, "block_end": block_until})
        return CountedFailure(failures=failures, block_seconds=delay)

    async def clear(self, key: str) -> None:
        """Forget the failures and the block (checks in flight stay reserved)."""
        async with self._engine.begin() as conn:
            await conn.execute(self._clear, {"subject": key})
            await conn.execute(self._forget_cleared, {"subject": key})

    async def forget_stale(self, now: dt.datetime) -> int:
        stale_before = now - dt.timedelta(seconds=self._settings.forget_after_seconds)
        # A row with a live lease has a check in flight: its settlement still needs it.
        lease_lapsed = or_(_Entry.lease_until.is_(None), _Entry.lease_until < now)
        statement = delete(_Entry).where(_Entry.last_failure_at < stale_before, lease_lapsed)
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
        return result.rowcount or 0

    def _is_stale(self, last_failure_at: dt.datetime, now: dt.datetime) -> bool:
        return last_failure_at < now - dt.timedelta(seconds=self._settings.forget_after_seconds)


def _reserve_statement(dialect: str, free_attempts: int) -> ReturningInsert[int, dt.datetime | None, str | None]:
    """Grant a check (count it in flight, write the caller's token) unless the subject is
    blocked or its free checks are taken and one is in flight; return what it found."""
    # A lapsed lease means its replica died mid-check: those checks are not in flight.
    in_flight = case((_Entry.lease_until > _NOW, _Entry.in_flight), else_=0)
    failures = case((_Entry.last_failure_at < _STALE_BEFORE, 0), else_=_Entry.failures)
    blocked = and_(_Entry.blocked_until.is_not(None), _Entry.blocked_until > _NOW)
    grant = and_(~blocked, or_(failures + in_flight < free_attempts, in_flight == 0))
    return (
        upsertable_insert(dialect, _Entry)
        .values(
            key=_KEY,
            failures=0,
            last_failure_at=_NOW,
            blocked_until=None,
            in_flight=1,
            lease_until=_LEASE_UNTIL,
            grant_token=_TOKEN,
        )
        .on_conflict_do_update(
            index_elements=[_Entry.key],
            set_={
                "failures": failures,
                "in_flight": case((grant, in_flight + 1), else_=in_flight),
                "lease_until": case((grant, _LEASE_UNTIL), else_=_Entry.lease_until),
                # The compare-and-set's witness: only a granted reservation writes its token.
                "grant_token": case((grant, _TOKEN), else_=_Entry.grant_token),
            },
        )
        .returning(_Entry.failures, _Entry.blocked_until, _Entry.grant_token)
    )


def _count_failure_statement(dialect: str) -> ReturningInsert[int, dt.datetime | None]:
    """Count a checked failure (every one, even one that ends during a block) and release
    its check; return the count and the block in force."""
    return (
        upsertable_insert(dialect, _Entry)
        .values(key=_KEY, failures=1, last_failure_at=_NOW, blocked_until=None, in_flight=0)
        .on_conflict_do_update(
            index_elements=[_Entry.key],
            set_={
                "failures": case((_Entry.last_failure_at < _STALE_BEFORE, 1), else_=_Entry.failures + 1),
                "last_failure_at": _NOW,
                "in_flight": case((_Entry.in_flight > 0, _Entry.in_flight - 1), else_=0),
            },
        )
        .returning(_Entry.failures, _Entry.blocked_until)
    )


# KEYS: failures, blocked, in_flight. ARGV: free_attempts, lease_ms.
# Returns {granted (0/1), failures, milliseconds left of a block}.
_REDIS_RESERVE = """
local left = redis.call('PTTL', KEYS[2])
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if left > 0 then
  return {0, failures, left}
end
local in_flight = tonumber(redis.call('GET', KEYS[3]) or '0')
if failures + in_flight < tonumber(ARGV[1]) or in_flight <= 0 then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[2]))
  return {1, failures, 0}
end
return {0, failures, 0}
"""

# KEYS: failures, blocked, in_flight. ARGV: outcome, forget_after, free_attempts,
# base_delay, max_delay. Returns {failures, seconds of the block started}.
_REDIS_SETTLE = """
local in_flight = tonumber(redis.call('GET', KEYS[3]) or '0')
if in_flight > 1 then
  redis.call('DECR', KEYS[3])
else
  redis.call('DEL', KEYS[3])
end
if ARGV[1] == 'succeeded' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {0, 0}
end
if ARGV[1] ~= 'failed' then
  return {0, 0}
end
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
local beyond = failures - tonumber(ARGV[3])
if beyond <= 0 then
  return {failures, 0}
end
local delay = math.floor(math.min(tonumber(ARGV[5]), tonumber(ARGV[4]) * 2 ^ math.min(beyond - 1, 32)))
if redis.call('PTTL', KEYS[2]) < delay * 1000 then
  redis.call('SET', KEYS[2], '1', 'EX', delay)
end
return {failures, delay}
"""


class RedisThrottleStore:
    """Three keys per subject: the failure count, which expires ``forget_after_seconds``
    after the last failure; a block marker, which expires when the block ends; and the
    checks in flight, which expire with their lease. Redis's own expiry does the clean-up,
    and each step is one Lua script (atomic on the server)."""

    PREFIX = "user-service:login-throttle:"

    def __init__(self, redis: Redis, settings: LoginThrottleSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._reserve = redis.register_script(_REDIS_RESERVE)
        self._settle = redis.register_script(_REDIS_SETTLE)

    def _keys(self, key: str) -> tuple[str, str, str]:
        return f"{self.PREFIX}failures:{key}", f"{self.PREFIX}blocked:{key}", f"{self.PREFIX}in-flight:{key}"

    async def state(self, key: str, now: dt.datetime) -> ThrottleState:
        failures_key, blocked_key, in_flight_key = self._keys(key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(failures_key)
            pipe.pttl(blocked_key)
            pipe.get(in_flight_key)
            failures, blocked_ms, in_flight = await pipe.execute()
        return ThrottleState(int(failures or 0), math.ceil(max(int(blocked_ms), 0) / 1000), int(in_flight or 0))

    async def reserve(self, key: str, now: dt.datetime) -> Reservation:
        lease_ms = self._settings.check_lease_seconds * 1000
        granted, failures, milliseconds = await self._reserve(
            keys=self._keys(key), args=[self._settings.free_attempts, lease_ms]
        )
        return Reservation(
            granted=bool(granted), failures=int(failures), retry_after_seconds=math.ceil(int(milliseconds) / 1000)
        )

    async def settle(self, key: str, now: dt.datetime, outcome: Outcome) -> CountedFailure:
        policy = self._settings
        failures, delay = await self._settle(
            keys=self._keys(key),
            args=[
                outcome.value,
                policy.forget_after_seconds,
                policy.free_attempts,
                policy.base_delay_seconds,
                policy.max_delay_seconds,
            ],
        )
        return CountedFailure(failures=int(failures), block_seconds=int(delay))

    async def clear(self, key: str) -> None:
        failures_key, blocked_key, _ = self._keys(key)
        await self._redis.delete(failures_key, blocked_key)

    async def forget_stale(self, now: dt.datetime) -> int:
        return 0  # keys expire by themselves


class Throttled(Exception):
    """The subject is blocked, or its one check beyond the free ones did not end in time."""

    def __init__(self, failures: int, retry_after_seconds: int) -> None:
        super().__init__(f"throttled for {retry_after_seconds} s after {failures} failures")
        self.failures = failures
        self.retry_after_seconds = retry_after_seconds


class Check:
    """One reserved password check; the caller reports how it ended."""

    def __init__(self, failures_before: int) -> None:
        self.failures_before = failures_before
        self.outcome = Outcome.ABANDONED
        self.counted: CountedFailure | None = None

    def failed(self) -> None:
        self.outcome = Outcome.FAILED

    def succeeded(self) -> None:
        self.outcome = Outcome.SUCCEEDED


# A waiter learns of a settlement in this process at once; one in another replica by
# looking at the store this often (a read; a reservation, a write, only when it looks free).
_LOOK_EVERY_SECONDS = 0.05


class _WaitingLine:
    """The requests of this process waiting to check one subject's password, first come
    first served: only the head looks at the store, the rest wait their turn. Without the
    line every waiter polled, and fresh arrivals, trying at once, won the freed slot over
    them (a user's own 8 concurrent logins got 429s after waiting out ``wait_seconds``)."""

    def __init__(self) -> None:
        self.turn = asyncio.Lock()  # FIFO: asyncio wakes its waiters in order
        self.settled = asyncio.Event()  # a check of the subject ended in this process
        self.members = 0


class LoginThrottle:
    """The use cases' view: reserve a check for a subject, then report its outcome.
    Disabled, it reserves nothing and counts nothing; so does a login name that cannot
    belong to any account (None: control characters)."""

    def __init__(self, store: ThrottleStore, settings: LoginThrottleSettings) -> None:
        self._store = store
        self._settings = settings
        self._lines: dict[str, _WaitingLine] = {}

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    async def state(self, key: str) -> ThrottleState:
        return await self._store.state(key, _now()) if self._settings.enabled else CLEAR

    @asynccontextmanager
    async def check(self, key: str | None) -> AsyncIterator[Check]:
        """Reserve a check for ``key`` (raise Throttled if it is blocked, or if no check
        could be reserved within ``wait_seconds``), run the body, then settle with the
        outcome the body reported: failed(), succeeded(), or neither (abandoned: an
        exception, a shed). The settlement is recorded in ``Check.counted``."""
        if not self._settings.enabled or key is None:
            yield Check(failures_before=0)
            return
        reservation = await self._reserve(key)
        check = Check(failures_before=reservation.failures)
        try:
            yield check
        finally:
            # Shielded: a client that hangs up must not leave the subject reserved until
            # the lease lapses (which would block the owner for that long).
            check.counted = await asyncio.shield(self._store.settle(key, _now(), check.outcome))
            if line := self._lines.get(key):
                line.settled.set()

    async def _reserve(self, key: str) -> Reservation:
        deadline = asyncio.get_running_loop().time() + self._settings.wait_seconds
        if key not in self._lines:  # nobody of ours is waiting: try at once
            reservation = await self._store.reserve(key, _now())
            if reservation.granted:
                return reservation
            if reservation.blocked:
                raise Throttled(reservation.failures, reservation.retry_after_seconds)
        line = self._lines.setdefault(key, _WaitingLine())
        # Waiting for this name's turn is not waiting for a hash: the edge must not count
        # this request against the hashing pool meanwhile (app/web/shedding.py).
        waiting_for_something_else()
        line.members += 1
        try:
            async with line.turn:
                return await self._reserve_at_the_head(key, line, deadline)
        finally:
            line.members -= 1
            if not line.members:
                del self._lines[key]

    async def _reserve_at_the_head(self, key: str, line: _WaitingLine, deadline: float) -> Reservation:
        loop = asyncio.get_running_loop()
        look_first = False
        while True:
            line.settled.clear()  # before the look: a settlement during it is not missed
            state = await self._store.state(key, _now()) if look_first else None
            if state is not None and state.blocked:
                raise Throttled(state.failures, state.retry_after_seconds)
            if state is None or not state.in_flight or state.failures + state.in_flight < self._settings.free_attempts:
                reservation = await self._store.reserve(key, _now())
                if reservation.granted:
                    return reservation
                if reservation.blocked:
                    raise Throttled(reservation.failures, reservation.retry_after_seconds)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Throttled(state.failures if state else 0, 1)
            try:
                await asyncio.wait_for(line.settled.wait(), min(remaining, _LOOK_EVERY_SECONDS))
                look_first = False  # ours ended: try for the slot straight away
            except TimeoutError:
                look_first = True  # maybe another replica's ended: look before writing

    async def clear(self, key: str) -> None:
        if self._settings.enabled:
            await self._store.clear(key)

    async def forget_stale(self) -> int:
        return await self._store.forget_stale(_now())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
