"""Overload on the real process (``python -m app``, the production argon2 parameters and
pool): clients that retry at once and never honour Retry-After must not take the cores
from the logins that get through. Compared as a ratio within one run: successful logins
per second at 64 such connections against 8 (the pool's saturation), each a closed loop.

Before the edge shed (app/web/shedding.py) the 64 connections got 0.53 of the 8's rate
(13 against 24.5 a second on a 2-core machine): each shed cost ~3 ms of CPU inside
Litestar, and 300 of them a second came back at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.settings import PasswordSettings
from testkit.server_process import LITESTAR_CLI, ROOT, ServerProcess, without_coverage
from tests.integration.faults import LOGIN, UNTHROTTLED

PASSWORD = "overload-tamarind-41-quarry"
ACCOUNTS = 2000
SECONDS = 6.0


@dataclass
class Phase:
    connections: int
    ok: int
    statuses: dict[str, int]
    bad: list[list[object]]  # [status, first 200 characters of the body] of unexpected answers
    shed_seconds: list[float]
    elapsed: float

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.elapsed


# The client runs in a process of its own, untraced: under the suite's coverage tracer an
# httpx request costs several milliseconds of CPU, and at 64 connections the client took
# a core from the hashing it was measuring (15 logins/s against 25 in one full run).
CLIENT = """
import asyncio, json, sys, time
import httpx
base, prefix, password, accounts, connections, seconds = json.loads(sys.argv[1])

def problem_503(r):
    return (r.status_code == 503 and r.headers.get("content-type", "").startswith("application/problem+json")
            and r.json()["type"].endswith("/hashing-capacity-exceeded") and int(r.headers.get("retry-after", "0")) >= 1)

async def main():
    result = {"connections": connections, "ok": 0, "statuses": {}, "bad": [], "shed_seconds": []}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + seconds
        async def one(worker):
            index = worker
            while time.perf_counter() < deadline:
                index = (index * 7919 + 17) % accounts + 1
                started = time.perf_counter()
                body = {"username": f"{prefix}{index:06d}", "password": password}
                r = await client.post("/api/v1/auth/login", json=body)
                result["statuses"][str(r.status_code)] = result["statuses"].get(str(r.status_code), 0) + 1
                if r.status_code == 200:
                    result["ok"] += 1
                elif problem_503(r):
                    result["shed_seconds"].append(time.perf_counter() - started)
                else:
                    result["bad"].append([r.status_code, r.text[:200]])
        started = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(connections)))
        result["elapsed"] = time.perf_counter() - started
    print(json.dumps(result))

asyncio.run(main())
"""


def _closed_loop(base: str, prefix: str, connections: int, seconds: float) -> Phase:
    """``connections`` clients, each logging a random account in and at once again,
    whatever the answer (no back-off: the worst client there is)."""
    argument = json.dumps([base, prefix, PASSWORD, ACCOUNTS, connections, seconds])
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, argument],
        env=without_coverage(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    return Phase(**json.loads(done.stdout))


def _idle(base: str) -> None:
    """The last phase's queued hashes finish before the next phase starts."""
    for _ in range(100):
        text = httpx.get(f"{base}/metrics", timeout=10).text
        if all(
            sample.value == 0
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in ("user_service_password_hash_running", "user_service_password_hash_queue_depth")
        ):
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_clients_that_ignore_retry_after_do_not_starve_the_logins_that_get_through(
    server_process: Callable[..., ServerProcess],
) -> None:
    defaults = PasswordSettings()  # as deployed: m=46 MiB, t=2, one thread per core, queue 32
    server = server_process(
        USER_SERVICE_PASSWORDS__TIME_COST=str(defaults.time_cost),
        USER_SERVICE_PASSWORDS__MEMORY_COST_KIB=str(defaults.memory_cost_kib),
        USER_SERVICE_PASSWORDS__POOL_SIZE=str(defaults.pool_size),
        USER_SERVICE_PASSWORDS__QUEUE_SIZE=str(defaults.queue_size),
        USER_SERVICE_LOGGING__LEVEL="WARNING",
        **UNTHROTTLED,
    ).untraced()
    prefix = f"ovl{os.getpid() % 100000}x"
    seeded = subprocess.run(
        [*LITESTAR_CLI, "users", "seed", "--count", str(ACCOUNTS), "--prefix", prefix],
        cwd=ROOT,
        env={**server.env, "USER_SERVICE_SEED_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    server.start()
    try:
        _closed_loop(server.base_url, prefix, 2, 2.0)  # warm: statements compiled, pool filled
        _idle(server.base_url)
        saturated = _closed_loop(server.base_url, prefix, 8, SECONDS)
        _idle(server.base_url)
        overloaded = _closed_loop(server.base_url, prefix, 64, SECONDS)
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    finally:
        server.stop()

    print(  # noqa: T201 - the figures the note and README quote (-s shows them)
        f"\noverload: 8 connections {saturated.ok_per_second:.1f} logins/s {saturated.statuses}; "
        f"64 connections {overloaded.ok_per_second:.1f} logins/s {overloaded.statuses}"
    )
    for phase in (saturated, overloaded):
        assert not phase.bad, phase.bad[:5]
    assert overloaded.shed_seconds, "64 connections never overflowed the pool and its queue"
    # Goodput holds: the goal is 0.9 of the saturation rate (measured 0.95-1.0 here); the
    # margin is for this shared machine's noise. Before the edge shed it was 0.53.
    assert overloaded.ok_per_second >= 0.8 * saturated.ok_per_second, (saturated, overloaded)
    # Each shed was held (an idle wait) before it went: the brake on clients like these.
    held = sorted(overloaded.shed_seconds)[len(overloaded.shed_seconds) // 2]
    assert held >= defaults.shed_delay_seconds, held
    # And counted where an SRE looks: the login's shed counter and the route's 503s.
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    sheds = sum(1 for _ in overloaded.shed_seconds)
    assert samples[("user_service_login_attempts_total", (("result", "shed"),))] >= sheds
    route_503 = (
        "http_server_request_duration_seconds_count",
        (("http_request_method", "POST"), ("http_response_status_code", "503"), ("http_route", LOGIN)),
    )
    assert samples[route_503] >= sheds
