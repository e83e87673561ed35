"""Login capacity with and without the second factor, measured in one run.

    uv run python -m loadtests.bench_second_factor [--seconds 8] [--rounds 3] [--connections 8]

One service process with its production argon2 parameters on a throwaway PostgreSQL (or
BENCH_DATABASE_URL), accounts seeded with ``litestar users seed`` (half of them
``--with-totp``), then the same closed-loop client drives, in alternating rounds of equal
length, password-only logins (one request) and logins with a second factor (the password
step answered 403 ``mfa-required``, then ``/login/mfa`` with a TOTP code computed from the
seeded secret). Printed per kind: completed logins per second, the latency of a whole
login (p50, p99, both steps for the second factor), and argon2 verifies per completed
login from the service's own counter, which must be 1.0 for both: the code step costs no
hash; and CPU milliseconds per login, of the service (from /proc, argon2 included) and of
the client. The client is Python (httpx), the same for both kinds, and its CPU is shown
because on a small machine it is taken from the service; wrk cannot compute codes.

Every account logs in once per run: the service accepts a code of a given time step once
per account, and each round takes fresh accounts, so no code is ever a replay.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp

from app.identity.tokens import generate_private_key_pem
from app.identity.totp import derived_totp_secret
from app.settings import PasswordSettings
from loadtests.bench_observability import database
from testkit.server_process import LITESTAR_CLI, ROOT, ServerProcess

PASSWORD = "bench-juniper-73-harbour"
LOGIN = "/api/v1/auth/login"
# Enough accounts that no round runs out: more than any 2-core pod logs in per round.
ACCOUNTS_PER_KIND = 4000


@dataclass
class Round:
    kind: str
    logins: int
    seconds: float
    latencies_ms: list[float]
    verifies: float = 0.0
    service_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.logins / self.seconds


async def _login(client: httpx.AsyncClient, username: str, with_code: bool) -> bool:
    response = await client.post(LOGIN, json={"username": username, "password": PASSWORD})
    if not with_code:
        return response.status_code == 200
    if response.status_code != 403 or "mfa_token" not in response.json():
        return False
    code = pyotp.TOTP(derived_totp_secret(PASSWORD, username)).now()
    second = await client.post(f"{LOGIN}/mfa", json={"mfa_token": response.json()["mfa_token"], "code": code})
    return second.status_code == 200


async def drive(base_url: str, usernames: Iterator[str], *, with_code: bool, seconds: float, connections: int) -> Round:
    """``connections`` clients, each logging in and at once again until time is up."""
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if await _login(client, next(usernames), with_code):
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures} logins failed ({'with' if with_code else 'without'} a second factor)")
    return Round("second factor" if with_code else "password only", len(latencies), elapsed, latencies)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def verifies(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    found = re.search(r'^user_service_password_hash_duration_seconds_count\{operation="verify"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def seed(env: dict[str, str], prefix: str, *options: str) -> None:
    subprocess.run(
        [*LITESTAR_CLI, "users", "seed", "--count", str(ACCOUNTS_PER_KIND), "--prefix", prefix, *options],
        cwd=ROOT,
        env={**env, "USER_SERVICE_SEED_PASSWORD": PASSWORD},
        input="",
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def summary(rounds: list[Round]) -> str:
    """Median rate over the rounds (and its range), whole-login latency over all of them,
    and per completed login: argon2 verifies, service CPU and client CPU."""
    rates = [r.per_second for r in rounds]
    latencies = [ms for r in rounds for ms in r.latencies_ms]
    logins = sum(r.logins for r in rounds)
    spread = f" (rounds {min(rates):.1f}-{max(rates):.1f})" if len(rounds) > 1 else ""
    return (
        f"{statistics.median(rates):5.1f} logins/s{spread}, p50 {percentile(latencies, 0.5):.0f} ms,"
        f" p99 {percentile(latencies, 0.99):.0f} ms, {sum(r.verifies for r in rounds) / logins:.2f} verifies,"
        f" service CPU {1000 * sum(r.service_cpu_seconds for r in rounds) / logins:.1f} ms,"
        f" client CPU {1000 * sum(r.client_cpu_seconds for r in rounds) / logins:.1f} ms per login"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    settings = PasswordSettings()
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp, database() as url:
        key = Path(tmp) / "signing.pem"
        key.write_bytes(generate_private_key_pem())
        server = ServerProcess(
            database_url=url,
            signing_key_file=key,
            log_file=Path(tmp) / "server.log",
            USER_SERVICE_PASSWORDS__TIME_COST=str(settings.time_cost),
            USER_SERVICE_PASSWORDS__MEMORY_COST_KIB=str(settings.memory_cost_kib),
            USER_SERVICE_LOGGING__LEVEL="WARNING",
            USER_SERVICE_MAIL__NEW_LOGIN_NOTICE="false",  # the same work after both kinds of login
        ).untraced()
        run = f"b{time.time_ns() % 10**8}"
        seed(server.env, f"{run}p")
        seed(server.env, f"{run}t", "--with-totp")
        server.start()
        pid = server.process.pid if server.process else 0
        try:
            plain = (f"{run}p{i:06d}" for i in itertools.count(1))
            totp = (f"{run}t{i:06d}" for i in itertools.count(1))
            asyncio.run(drive(server.base_url, plain, with_code=False, seconds=2, connections=2))  # warm-up
            for _ in range(args.rounds):
                for with_code, names in ((False, plain), (True, totp)):
                    before = verifies(server.base_url)
                    service_before, client_before = cpu_seconds(pid), time.process_time()
                    result = asyncio.run(
                        drive(
                            server.base_url,
                            names,
                            with_code=with_code,
                            seconds=args.seconds,
                            connections=args.connections,
                        )
                    )
                    result.client_cpu_seconds = time.process_time() - client_before
                    time.sleep(1)  # the round's last hashes finish before the counters are read
                    result.service_cpu_seconds = cpu_seconds(pid) - service_before
                    result.verifies = verifies(server.base_url) - before
                    rounds.append(result)
                    print(f"{result.kind:>14}: {summary([result])}", flush=True)
        finally:
            server.stop()

    print(
        f"\nargon2id m={settings.memory_cost_kib // 1024} MiB t={settings.time_cost} p={settings.parallelism},"
        f" {args.connections} connections, {args.rounds} rounds of {args.seconds:g} s each, interleaved"
    )
    for kind in ("password only", "second factor"):
        print(f"{kind:>14}: {summary([r for r in rounds if r.kind == kind])}")
    ratios = [
        b.per_second / a.per_second
        for a, b in itertools.pairwise(rounds)
        if a.kind == "password only" and b.kind != a.kind
    ]
    print(f"second factor / password only, per pair of rounds: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
