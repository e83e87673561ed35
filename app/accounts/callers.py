"""The caller of an authenticated request, remembered for a moment.

Every authenticated request needs the account behind its token and whether the token's
session still stands (``read_live_caller``). Read from the database each time, that one
query was a third of the CPU of ``GET /users/me``. ``LiveCallers`` keeps each answer for
``TOKENS__CALLER_CACHE_SECONDS`` (1 s), keyed by account and session, so a client that
sends several requests within a second (a page of an app loading, a busy integration)
pays for one read.

What the contract promises still holds:

- **On this replica, at once.** Every statement that updates or deletes a row of
  ``users`` or ``auth_sessions`` (a logout, a revoked session, a deactivation, a deletion,
  a role change, a password or profile change) makes this process forget everything it
  remembered, when the statement runs and again when its connection goes back to the
  pool, after the transaction ended. A read that was under way across such a change is
  not remembered (a generation number says so). With several worker processes the
  generation is a counter in a shared memory-mapped file, so a change in one worker is
  seen by the others on their next request.
- **On other replicas, within the cache's lifetime**: they learn of the change when their
  remembered answer expires, at most ``TOKENS__CALLER_CACHE_SECONDS`` later. 0 turns the
  cache off (every request reads, as before).

Refusals are not remembered: a revoked or unknown session is read (and refused) each time.

When a remembered answer expires while many requests of one caller are in flight (a busy
client on many connections), they share one read instead of each making its own: without
that, the burst of reads every second was the p99 of ``GET /users/me`` at 64 connections
(39-50 ms against 18-23 ms with nothing expiring, asyncio's loop, 2 cores). A request that
began after a change does not share a read that began before it.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.repository import read_live_caller
from app.accounts.schemas import UserRead

# UPDATE users / DELETE FROM auth_sessions ..., as the ORM, Core and text() write them.
_CHANGES_CALLERS = re.compile(r'^\s*(?:UPDATE|DELETE\s+FROM)\s+"?(?:users|auth_sessions)"?\s', re.IGNORECASE)
_GENERATION_FILE = "caller-generation"


class _LocalGeneration:
    def __init__(self) -> None:
        self._value = 0

    def read(self) -> int:
        return self._value

    def bump(self) -> None:
        self._value += 1


class _SharedGeneration:
    """A counter in a memory-mapped file that every worker process of this replica maps.
    Two bumps at once may land as one; either way the value is no longer what a reader
    saw before, which is all a reader checks."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    def read(self) -> int:
        value: int = struct.unpack_from("Q", self._map, 0)[0]
        return value

    def bump(self) -> None:
        struct.pack_into("Q", self._map, 0, (self.read() + 1) % (1 << 64))


@dataclass(frozen=True, slots=True)
class _Remembered:
    account: UserRead
    generation: int
    until: float


class LiveCallers:
    def __init__(
        self, engine: AsyncEngine, *, ttl_seconds: float, max_entries: int, shared_dir: str | None = None
    ) -> None:
        self._engine = engine
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._entries: dict[tuple[UUID, UUID], _Remembered] = {}
        # Reads under way, by caller, with the generation each began in.
        self._reading: dict[tuple[UUID, UUID], tuple[int, asyncio.Future[UserRead | None]]] = {}
        self._generation: _LocalGeneration | _SharedGeneration = (
            _SharedGeneration(Path(shared_dir) / _GENERATION_FILE) if shared_dir else _LocalGeneration()
        )
        if self.enabled:
            self._watch(engine)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._max_entries > 0

    async def get(self, user_id: UUID, session_id: UUID) -> UserRead | None:
        """The account if it may authenticate and the session stands, else None."""
        if not self.enabled:
            return await read_live_caller(self._engine, user_id, session_id)
        key = (user_id, session_id)
        generation = self._generation.read()
        remembered = self._entries.get(key)
        now = time.monotonic()
        if remembered is not None and remembered.generation == generation and now < remembered.until:
            return remembered.account
        under_way = self._reading.get(key)
        if under_way is not None and under_way[0] == generation:
            finished, account = await _shared(under_way[1])
            if finished:
                return account
        return await self._read(key, generation, now)

    async def _read(self, key: tuple[UUID, UUID], generation: int, now: float) -> UserRead | None:
        reading: asyncio.Future[UserRead | None] = asyncio.get_running_loop().create_future()
        self._reading[key] = (generation, reading)
        try:
            account = await read_live_caller(self._engine, *key)
        except BaseException:
            # Those waiting on this read make their own (a cancelled request, a database
            # error: theirs may fare differently).
            reading.cancel()
            raise
        finally:
            if self._reading.get(key, (None, None))[1] is reading:
                del self._reading[key]
        reading.set_result(account)
        if account is None:
            self._entries.pop(key, None)
        elif self._generation.read() == generation:  # nothing changed while it was read
            if len(self._entries) >= self._max_entries and key not in self._entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = _Remembered(account, generation, now + self._ttl)
        return account

    def forget_all(self) -> None:
        self._generation.bump()
        self._entries.clear()

    def _watch(self, engine: AsyncEngine) -> None:
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _on_statement(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if _CHANGES_CALLERS.match(statement):
                conn.info["changes_callers"] = True
                self.forget_all()

        @event.listens_for(sync_engine.pool, "checkin")
        def _on_checkin(dbapi_connection: Any, record: Any) -> None:
            # The transaction is over (committed or rolled back): a read that began before
            # the commit and saw the old rows must not be remembered past this point.
            if record is not None and record.info.pop("changes_callers", False):
                self.forget_all()


async def _shared(reading: asyncio.Future[UserRead | None]) -> tuple[bool, UserRead | None]:
    """(True, the result) of another request's read, or (False, None) when that read did
    not finish (its request was cancelled or the database failed it). Shielded: this
    request being cancelled must not cancel the read the others wait on."""
    try:
        return True, await asyncio.shield(reading)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if reading.cancelled() and (current is None or not current.cancelling()):
            return False, None
        raise
