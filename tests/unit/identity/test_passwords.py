"""argon2id hashing on a bounded worker pool: correctness, threading and admission control."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher as Argon2Hasher

from app.errors import HashingCapacityExceeded
from app.identity.passwords import HashTiming, PasswordHasher
from app.settings import PasswordSettings

CHEAP: dict[str, Any] = {"time_cost": 1, "memory_cost_kib": 64, "parallelism": 1}
PASSWORD = "violet-tangerine-47-harbor"
WORKER_WAIT_LIMIT = 10.0  # seconds a blocked worker waits before giving up, so a failing test cannot hang
REFUSAL_GUARD = 2.0  # a refusal that does not come at once fails the test instead of waiting for the workers


def cheap_settings(**overrides: Any) -> PasswordSettings:
    return PasswordSettings.model_validate({**CHEAP, "pool_size": 2, "queue_size": 4, **overrides})


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    started = PasswordHasher(cheap_settings())
    await started.start()
    yield started
    started.shutdown()


async def wait_until(condition: Callable[[], bool], *, rounds: int = 1000) -> None:
    """Let the event loop (and worker threads) run until ``condition`` holds; fail if it never does."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


class BlockedHashes:
    """Replaces argon2's hash so that each call blocks its worker until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Argon2Hasher.hash
        blocked = self

        def slow_hash(self: Argon2Hasher, password: str | bytes, *, salt: bytes | None = None) -> str:
            with blocked.lock:
                blocked.running += 1
            blocked.release.wait(WORKER_WAIT_LIMIT)
            return original(self, password, salt=salt)

        monkeypatch.setattr(Argon2Hasher, "hash", slow_hash)


@pytest.fixture
def blocked() -> Iterator[BlockedHashes]:
    hashes = BlockedHashes()
    yield hashes
    hashes.release.set()  # never leave a worker stuck, whatever the test did


# --------------------------------------------------------------------------- correctness


@pytest.mark.anyio
async def test_hash_then_verify_matches(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)

    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    result = await hasher.verify(stored, PASSWORD)
    assert result.matches is True
    assert result.needs_rehash is False


@pytest.mark.anyio
async def test_wrong_password_does_not_match(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)

    for wrong in ["violet-tangerine-47-harbo", PASSWORD.upper(), PASSWORD + " ", ""]:
        result = await hasher.verify(stored, wrong)
        assert result.matches is False, wrong


@pytest.mark.anyio
async def test_same_password_hashes_differently_each_time(hasher: PasswordHasher) -> None:
    first, second = await hasher.hash(PASSWORD), await hasher.hash(PASSWORD)
    assert first != second
    assert (await hasher.verify(first, PASSWORD)).matches
    assert (await hasher.verify(second, PASSWORD)).matches


@pytest.mark.anyio
async def test_hash_uses_the_configured_parameters() -> None:
    tuned = PasswordHasher(cheap_settings(time_cost=3, memory_cost_kib=128))
    await tuned.start()
    try:
        stored = await tuned.hash(PASSWORD)
    finally:
        tuned.shutdown()
    assert "$m=128,t=3,p=1$" in stored


@pytest.mark.anyio
@pytest.mark.parametrize(
    "stored",
    [
        "not-a-hash",
        "",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "$argon2id$v=19$m=64,t=1,p=1$garbage",
    ],
)
async def test_invalid_stored_hash_is_a_mismatch_not_an_error(hasher: PasswordHasher, stored: str) -> None:
    result = await hasher.verify(stored, PASSWORD)
    assert result.matches is False
    assert result.needs_rehash is False


@pytest.mark.anyio
async def test_non_ascii_stored_hash_is_a_mismatch_not_an_error(hasher: PasswordHasher) -> None:
    result = await hasher.verify("$argon2id$v=19$m=64,t=1,p=1$sälz$häsh", PASSWORD)
    assert result.matches is False


@pytest.mark.anyio
async def test_hash_made_with_weaker_parameters_needs_rehash(hasher: PasswordHasher) -> None:
    old_hash = await hasher.hash(PASSWORD)
    stronger = PasswordHasher(cheap_settings(time_cost=2))
    await stronger.start()
    try:
        upgraded = await stronger.verify(old_hash, PASSWORD)
        current = await stronger.verify(await stronger.hash(PASSWORD), PASSWORD)
        wrong = await stronger.verify(old_hash, "not-the-password")
    finally:
        stronger.shutdown()

    assert upgraded.matches is True
    assert upgraded.needs_rehash is True
    assert current.matches is True
    assert current.needs_rehash is False
    assert wrong.matches is False
    assert wrong.needs_rehash is False


# --------------------------------------------------------------------------- threading


@pytest.mark.anyio
async def test_hashing_and_verifying_run_on_worker_threads(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.current_thread()
    seen: list[tuple[str, threading.Thread]] = []
    original_hash, original_verify = Argon2Hasher.hash, Argon2Hasher.verify

    def recording_hash(self: Argon2Hasher, password: str | bytes, *, salt: bytes | None = None) -> str:
        seen.append(("hash", threading.current_thread()))
        return original_hash(self, password, salt=salt)

    def recording_verify(self: Argon2Hasher, hash: str | bytes, password: str | bytes) -> bool:
        seen.append(("verify", threading.current_thread()))
        return original_verify(self, hash, password)

    monkeypatch.setattr(Argon2Hasher, "hash", recording_hash)
    monkeypatch.setattr(Argon2Hasher, "verify", recording_verify)

    stored = await hasher.hash(PASSWORD)
    assert (await hasher.verify(stored, PASSWORD)).matches
    await hasher.verify_against_nothing(PASSWORD)

    assert [operation for operation, _ in seen] == ["hash", "verify", "verify"]
    for _, thread in seen:
        assert thread is not loop_thread
        assert thread is not threading.main_thread()
        assert thread.name.startswith("argon2")


@pytest.mark.anyio
async def test_observer_hears_each_operation() -> None:
    heard: list[tuple[str, HashTiming]] = []
    observed = PasswordHasher(cheap_settings())
    await observed.start()
    observed.observers.append(lambda operation, timing: heard.append((operation, timing)))
    try:
        stored = await observed.hash(PASSWORD)
        await observed.verify(stored, PASSWORD)
    finally:
        observed.shutdown()

    assert [operation for operation, _ in heard] == ["hash", "verify"]
    for _, timing in heard:
        assert timing.queue_wait_seconds >= 0
        assert timing.resume_seconds >= 0
        # argon2 is all CPU: on a thread that is not kept waiting, its CPU is its run time.
        assert 0 < timing.cpu_seconds <= timing.run_seconds * 1.02 + 0.001


@pytest.mark.anyio
async def test_a_hash_kept_off_its_core_shows_run_time_beyond_its_cpu(
    monkeypatch: pytest.MonkeyPatch, blocked: BlockedHashes
) -> None:
    """The run is timed on the worker thread, with the CPU it got: a hash held 0.2 s off
    the CPU (here by an event, on a machine by other work) shows 0.2 s more run than CPU,
    so an operator can tell a starved pool from slow hashing."""
    heard: list[HashTiming] = []
    observed = PasswordHasher(cheap_settings())
    await observed.start()
    blocked.install(monkeypatch)
    observed.observers.append(lambda _, timing: heard.append(timing))
    try:
        hashing = asyncio.create_task(observed.hash(PASSWORD))
        await wait_until(lambda: blocked.running == 1)
        await asyncio.sleep(0.2)
        blocked.release.set()
        await hashing
    finally:
        observed.shutdown()
    [timing] = heard
    assert timing.run_seconds >= 0.2
    assert timing.run_seconds - timing.cpu_seconds >= 0.19


# --------------------------------------------------------------------------- capacity


@pytest.mark.anyio
async def test_full_pool_and_queue_reject_the_next_hash_at_once(
    monkeypatch: pytest.MonkeyPatch, blocked: BlockedHashes
) -> None:
    hasher = PasswordHasher(cheap_settings(pool_size=1, queue_size=1, retry_after_seconds=7))
    await hasher.start()
    blocked.install(monkeypatch)
    try:
        first = asyncio.create_task(hasher.hash("first-password-123"))
        second = asyncio.create_task(hasher.hash("second-password-456"))
        await wait_until(lambda: hasher.admitted == 2 and blocked.running == 1)
        assert hasher.queued == 1

        # Refused at once: the call must not wait for a worker (the timeout only stops a hang).
        with pytest.raises(HashingCapacityExceeded) as caught:
            async with asyncio.timeout(REFUSAL_GUARD):
                await hasher.hash("third-password-789")
        assert caught.value.retry_after_seconds == 7
        # Verifying counts against the same capacity.
        with pytest.raises(HashingCapacityExceeded):
            async with asyncio.timeout(REFUSAL_GUARD):
                await hasher.verify("$argon2id$whatever", "x")
        assert hasher.admitted == 2
        assert not first.done()
        assert not second.done()

        blocked.release.set()
        first_hash, second_hash = await asyncio.gather(first, second)
    finally:
        blocked.release.set()
        hasher.shutdown()

    assert hasher.admitted == 0
    assert hasher.queued == 0
    assert first_hash != second_hash


@pytest.mark.anyio
async def test_capacity_frees_once_hashes_complete(monkeypatch: pytest.MonkeyPatch, blocked: BlockedHashes) -> None:
    hasher = PasswordHasher(cheap_settings(pool_size=1, queue_size=1))
    await hasher.start()
    blocked.install(monkeypatch)
    try:
        tasks = [asyncio.create_task(hasher.hash(f"password-number-{i}")) for i in range(2)]
        await wait_until(lambda: hasher.admitted == 2)
        with pytest.raises(HashingCapacityExceeded):
            async with asyncio.timeout(REFUSAL_GUARD):
                await hasher.hash("rejected-password")

        blocked.release.set()
        stored = await asyncio.gather(*tasks)
        assert hasher.admitted == 0

        # The freed slots admit new work again, and the completed hashes are real.
        again = await asyncio.gather(hasher.hash("after-1-password"), hasher.hash("after-2-password"))
        assert len(again) == 2
        assert (await hasher.verify(stored[0], "password-number-0")).matches
        assert hasher.admitted == 0
    finally:
        blocked.release.set()
        hasher.shutdown()


@pytest.mark.anyio
async def test_cancelled_request_keeps_its_slot_until_the_worker_finishes(
    monkeypatch: pytest.MonkeyPatch, blocked: BlockedHashes
) -> None:
    hasher = PasswordHasher(cheap_settings(pool_size=1, queue_size=0))
    await hasher.start()
    blocked.install(monkeypatch)
    try:
        running = asyncio.create_task(hasher.hash("abandoned-password"))
        await wait_until(lambda: blocked.running == 1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

        # The worker still burns its core on the abandoned hash, so no new work is admitted.
        assert hasher.admitted == 1
        with pytest.raises(HashingCapacityExceeded):
            async with asyncio.timeout(REFUSAL_GUARD):
                await hasher.hash("impatient-password")

        blocked.release.set()
        await wait_until(lambda: hasher.admitted == 0)
        assert (await hasher.verify(await hasher.hash("later-password"), "later-password")).matches
    finally:
        blocked.release.set()
        hasher.shutdown()


# --------------------------------------------------------------------------- lifecycle


@pytest.mark.anyio
async def test_verify_against_nothing_before_start_raises() -> None:
    hasher = PasswordHasher(cheap_settings())
    with pytest.raises(RuntimeError):
        await hasher.verify_against_nothing(PASSWORD)


@pytest.mark.anyio
async def test_hash_before_start_raises() -> None:
    hasher = PasswordHasher(cheap_settings())
    with pytest.raises(RuntimeError):
        await hasher.hash(PASSWORD)
    assert hasher.admitted == 0


@pytest.mark.anyio
async def test_verify_against_nothing_after_start_spends_a_verify(hasher: PasswordHasher) -> None:
    await hasher.verify_against_nothing(PASSWORD)  # no error: the dummy hash exists
    assert hasher.admitted == 0


def _nice_of(thread_id: int) -> int:
    stat = Path(f"/proc/self/task/{thread_id}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5): nice


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="per-thread nice values are read from Linux's /proc")
async def test_hashing_threads_yield_the_cpu_to_the_event_loop() -> None:
    hasher = PasswordHasher(PasswordSettings(time_cost=1, memory_cost_kib=64, pool_size=2, thread_nice=10))
    await hasher.start()
    try:
        await asyncio.gather(*(hasher.hash(f"password-{i}") for i in range(4)))
        workers = [t.native_id for t in threading.enumerate() if t.name.startswith("argon2") and t.native_id]
        assert workers
        assert {_nice_of(tid) for tid in workers} == {min(19, _nice_of(threading.get_native_id()) + 10)}
        assert _nice_of(threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)  # the loop's unchanged
    finally:
        hasher.shutdown()
