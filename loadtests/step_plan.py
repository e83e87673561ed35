"""The capacity profile's step plan, read from the ``LOADTEST_STEP_*`` environment that
loadtests/profiles.py writes: apart from loadtests/shapes.py so that it can be read
without importing Locust (whose gevent patches the importing process)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loadtests.scenarios.config import DEFAULT_ARRIVAL_PACING_SECONDS, parse_mix


@dataclass(frozen=True, slots=True)
class StepPlan:
    start_users: int = 5
    step_users: int = 5
    step_seconds: float = 30.0
    max_users: int = 100
    spawn_rate: float = 5.0
    settle_seconds: float = 5.0
    stop_shed_ratio: float = 0.05
    stop_error_ratio: float = 0.01
    stop_p95_ms: float = 1000.0
    watch: str = "POST /api/v1/auth/login"
    report_dir: Path | None = None
    # A step load by offered rate (only LoginArrivals, open loop): each user starts a
    # login every pacing seconds, so a step offers users / pacing logins/s.
    pacing_seconds: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StepPlan:
        def num(key: str, default: float) -> float:
            return float(environ.get(f"LOADTEST_{key}", default))

        defaults = cls()
        report_dir = environ.get("LOADTEST_REPORT_DIR")
        open_loop = (parse_mix(environ.get("LOADTEST_MIX", "")) or {}).keys() == {"LoginArrivals"}
        pacing = environ.get("LOADTEST_ARRIVAL_PACING_SECONDS", DEFAULT_ARRIVAL_PACING_SECONDS) if open_loop else None
        return cls(
            start_users=int(num("STEP_START_USERS", defaults.start_users)),
            step_users=int(num("STEP_USERS", defaults.step_users)),
            step_seconds=num("STEP_SECONDS", defaults.step_seconds),
            max_users=int(num("STEP_MAX_USERS", defaults.max_users)),
            spawn_rate=num("STEP_SPAWN_RATE", defaults.spawn_rate),
            settle_seconds=num("STEP_SETTLE_SECONDS", defaults.settle_seconds),
            stop_shed_ratio=num("STOP_SHED_RATIO", defaults.stop_shed_ratio),
            stop_error_ratio=num("STOP_ERROR_RATIO", defaults.stop_error_ratio),
            stop_p95_ms=num("STOP_P95_MS", defaults.stop_p95_ms),
            watch=environ.get("LOADTEST_STOP_P95_REQUEST", defaults.watch),
            report_dir=Path(report_dir) if report_dir else None,
            pacing_seconds=float(pacing) if pacing else None,
        )

    def users(self, step: int) -> int:
        return self.start_users + step * self.step_users

    def offered_per_s(self, users: int) -> float | None:
        return round(users / self.pacing_seconds, 1) if self.pacing_seconds else None
