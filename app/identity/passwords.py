"""argon2id hashing on a bounded thread pool, so the event loop never hashes.

argon2-cffi releases the GIL while it works, so ``pool_size`` threads use that many
cores. Admission is counted on the event loop: when ``pool_size`` hashes run and
``queue_size`` more wait, the next caller gets :class:`HashingCapacityExceeded` at
once (503 with Retry-After) instead of a queue that grows until every client times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.errors import HashingCapacityExceeded
from app.settings import PasswordSettings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    matches: bool
    needs_rehash: bool = False


@dataclass(frozen=True, slots=True)
class HashTiming:
    """What one pooled job cost, every figure taken where it happened.

    ``run_seconds`` is the wall time on the worker thread and ``cpu_seconds`` the CPU that
    thread got in it: argon2 is CPU-bound, so any difference is time the thread waited
    for a core (CPU throttling, other processes, the event loop). ``resume_seconds`` is
    the time from the thread's end to the awaiting request running again: the event
    loop's delay, not the hash's. Issue 17 measured "verifies" of 79 ms for a 55 ms hash
    and could not tell these three apart, because the run was timed on the event loop.
    """

    queue_wait_seconds: float
    run_seconds: float
    cpu_seconds: float = 0.0
    resume_seconds: float = 0.0


HashObserver = Callable[[str, HashTiming], None]


def argon2id(settings: PasswordSettings) -> Argon2Hasher:
    """argon2-cffi's hasher with the configured parameters (the service and its calibration)."""
    return Argon2Hasher(
        time_cost=settings.time_cost,
        memory_cost=settings.memory_cost_kib,
        parallelism=settings.parallelism,
        hash_len=settings.hash_length,
        salt_len=settings.salt_length,
        type=Type.ID,
    )


_log = logging.getLogger(__name__)


def _yield_to_the_event_loop(nice: int) -> None:
    """Run in each hashing thread as it starts: raise its nice value by ``nice`` (Linux
    sets it per thread id), so that when the event loop and a hash want the same core, the loop gets
    it and the hash takes what is left. Measured on 2 cores during a login storm: see the
    README, "Performance". Lowering one's own priority needs no privilege."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
    except OSError as exc:  # a sandbox that forbids it: the hashes run at normal priority
        _log.warning("hashing thread priority unchanged: %s", exc)


class PasswordHasher:
    def __init__(self, settings: PasswordSettings) -> None:
        self._argon2 = argon2id(settings)
        self._pool_size = settings.pool_size
        self._capacity = settings.pool_size + settings.queue_size
        self._retry_after = settings.retry_after_seconds
        self._thread_nice = settings.thread_nice
        # Called on the event loop (metrics and tracing hook in here): after every pooled
        # job; whenever the number running or queued changes; when a job is shed.
        self.observers: list[HashObserver] = []
        self.load_observers: list[Callable[[int, int], None]] = []
        self.rejection_observers: list[Callable[[str], None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._admitted = 0
        self._dummy_hash: str | None = None

    @property
    def admitted(self) -> int:
        """Hashes running or waiting right now."""
        return self._admitted

    @property
    def queued(self) -> int:
        return max(0, self._admitted - self._pool_size)

    @property
    def pool_size(self) -> int:
        return self._pool_size

    @property
    def queue_size(self) -> int:
        return self._capacity - self._pool_size

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=self._pool_size,
            thread_name_prefix="argon2",
            initializer=functools.partial(_yield_to_the_event_loop, self._thread_nice),
        )
        # The hash that unknown users are verified against, so that "no such user" costs
        # exactly what "wrong password" costs, with the current parameters.
        # Computed outside _run: it is start-up work, not a hash anyone asked for.
        dummy = self._executor.submit(self._argon2.hash, secrets.token_urlsafe(24))
        self._dummy_hash = await asyncio.wrap_future(dummy)

    def shutdown(self) -> None:
        """Refuse new work and drop queued jobs; running hashes finish on their threads
        without the event loop waiting for them."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def full(self) -> bool:
        """No hash could be admitted now (every worker busy and the queue full)."""
        return self._admitted >= self._capacity

    @property
    def capacity(self) -> int:
        """Hashes admitted at most at once: running plus queued."""
        return self._capacity

    def ensure_capacity(self, operation: str) -> None:
        """Refuse at once, before any other work, when a hash could not be admitted now.

        A shed answer must be the cheapest one the service gives: under overload it is
        the common case, and every database read or JSON parse it spends is taken from
        the hashing that still gets through. Admission in _run stays the real bound.
        """
        if self.full:
            self.refuse(operation)

    def refuse(self, operation: str) -> NoReturn:
        """Shed ``operation``: counted by the rejection observers, HashingCapacityExceeded."""
        for reject in self.rejection_observers:
            reject(operation)
        raise HashingCapacityExceeded(self._retry_after)

    async def hash(self, password: str) -> str:
        return await self._run("hash", self._argon2.hash, password)

    async def verify(self, stored_hash: str, password: str) -> VerifyResult:
        return await self._run("verify", self._verify_sync, stored_hash, password)

    async def verify_against_nothing(self, password: str) -> None:
        """Spend one verify's work on a user that does not exist (timing parity)."""
        if self._dummy_hash is None:
            raise RuntimeError("PasswordHasher.start() was not awaited")
        await self._run("verify", self._verify_sync, self._dummy_hash, password)

    def _verify_sync(self, stored_hash: str, password: str) -> VerifyResult:
        try:
            self._argon2.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError, ValueError):
            # ValueError (UnicodeEncodeError): a corrupted stored hash is a mismatch, not a 500.
            return VerifyResult(matches=False)
        return VerifyResult(matches=True, needs_rehash=self._is_upgrade(stored_hash))

    def _is_upgrade(self, stored_hash: str) -> bool:
        """Whether rehashing with the current parameters makes the stored hash stronger.
        Only ever upwards: a service started with weaker parameters (a mistake, a test
        set-up) must not rewrite every stronger hash downwards as people log in."""
        if not self._argon2.check_needs_rehash(stored_hash):
            return False
        try:
            stored = extract_parameters(stored_hash)
        except InvalidHashError:
            return False
        return self._argon2.memory_cost >= stored.memory_cost and self._argon2.time_cost >= stored.time_cost

    async def _run(self, operation: str, fn: Callable[..., T], *args: str) -> T:
        if self._executor is None:
            raise RuntimeError("PasswordHasher is not started")
        self.ensure_capacity(operation)
        loop = asyncio.get_running_loop()
        self._admitted += 1
        self._load_changed()
        submitted = time.perf_counter()
        # (started, finished, CPU seconds), written by the worker thread before its future
        # completes, so it is complete by the time the await below returns.
        marks: list[float] = []

        def timed() -> T:
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                return fn(*args)
            finally:
                marks.extend((started, time.perf_counter(), time.thread_time() - cpu_started))

        try:
            future: Future[T] = self._executor.submit(timed)
        except RuntimeError:  # shut down between the check above and here
            self._release()
            raise
        # Release the slot when the worker is really done, not when the awaiting request
        # goes away: a cancelled request's hash keeps its core busy until it finishes.
        future.add_done_callback(lambda _: self._release_soon(loop))
        result = await asyncio.wrap_future(future)
        if marks:
            started, finished, cpu_seconds = marks
            timing = HashTiming(
                queue_wait_seconds=started - submitted,
                run_seconds=finished - started,
                cpu_seconds=cpu_seconds,
                resume_seconds=time.perf_counter() - finished,
            )
            for observer in self.observers:
                observer(operation, timing)
        return result

    def _release_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        # RuntimeError: the loop closed first (shutdown), so nobody counts any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self._admitted -= 1
        self._load_changed()

    def _load_changed(self) -> None:
        running = min(self._admitted, self._pool_size)
        for observe in self.load_observers:
            observe(running, self._admitted - running)
