"""How fast can this machine hash? argon2 hash and verify time (wall and CPU) at the
configured parameters, and the login ceiling that follows: cores / CPU seconds per verify.

CPU time is the process's (all threads): argon2 with parallelism p > 1 runs p lanes on
several threads inside one hash, so its CPU time exceeds its wall time and the ceiling
must be computed from CPU, not from wall time.
"""

from __future__ import annotations

import resource
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.identity.memory import keep_hash_memory_mapped
from app.identity.passwords import argon2id
from app.settings import PasswordSettings, available_cpus


@dataclass(frozen=True, slots=True)
class Timing:
    wall_seconds: float
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class Calibration:
    settings: PasswordSettings
    cores: int
    hash: Timing
    verify: Timing
    memory_kept_mapped: bool

    @property
    def threads_per_verify(self) -> float:
        """CPU / wall: about 1 at p=1, up to p when argon2's lanes run in parallel."""
        return self.verify.cpu_seconds / self.verify.wall_seconds

    @property
    def login_ceiling_per_second(self) -> float:
        """Verifies per second the cores can do at most: cores / CPU seconds per verify."""
        return self.cores / self.verify.cpu_seconds

    @property
    def pool_bound_per_second(self) -> float:
        """What the configured pool can reach: its threads each doing one verify at a time,
        never more than the cores allow."""
        return min(self.settings.pool_size / self.verify.wall_seconds, self.login_ceiling_per_second)

    def report(self) -> str:
        s = self.settings
        lines = [
            f"argon2id m={s.memory_cost_kib} KiB ({s.memory_cost_kib / 1024:.0f} MiB),"
            f" t={s.time_cost}, p={s.parallelism}",
            f"cores available: {self.cores}; hashing pool: {s.pool_size} threads, queue {s.queue_size}",
            f"allocator keeps hash memory mapped: {'yes' if self.memory_kept_mapped else 'no'}",
            f"hash:   {self.hash.wall_seconds * 1000:7.1f} ms wall, {self.hash.cpu_seconds * 1000:7.1f} ms CPU",
            f"verify: {self.verify.wall_seconds * 1000:7.1f} ms wall, {self.verify.cpu_seconds * 1000:7.1f} ms CPU"
            f" ({self.threads_per_verify:.2f} threads busy per verify)",
            f"login ceiling: {self.login_ceiling_per_second:.1f} verifies/s"
            f" = {self.cores} cores / {self.verify.cpu_seconds * 1000:.1f} ms CPU per verify",
            f"this pool can reach: {self.pool_bound_per_second:.1f} verifies/s",
            f"peak hashing memory: {s.pool_size} x {s.memory_cost_kib / 1024:.0f} MiB"
            f" = {s.pool_size * s.memory_cost_kib / 1024:.0f} MiB",
        ]
        return "\n".join(lines)


def _timed(repeat: int, work: Callable[[], object]) -> Timing:
    work()  # warm-up: first-touch page faults and caches
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    for _ in range(repeat):
        work()
    wall = (time.perf_counter() - started) / repeat
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Timing(wall_seconds=wall, cpu_seconds=(usage.ru_utime + usage.ru_stime - cpu_before) / repeat)


def calibrate(settings: PasswordSettings, repeat: int = 20) -> Calibration:
    """Measure in this process, one hash at a time, with the service's memory setting."""
    kept = keep_hash_memory_mapped() if settings.keep_memory_mapped else False
    hasher = argon2id(settings)
    password = secrets.token_urlsafe(16)
    stored = hasher.hash(password)
    return Calibration(
        settings=settings,
        cores=available_cpus(),
        hash=_timed(repeat, lambda: hasher.hash(password)),
        verify=_timed(repeat, lambda: hasher.verify(stored, password)),
        memory_kept_mapped=kept,
    )
