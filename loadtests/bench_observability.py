"""What do logs, metrics and traces cost? GET /api/v1/users/me requests per second with all
three on (JSON access logs at INFO, Prometheus metrics, every request traced and exported
over OTLP/HTTP to a loopback receiver) against all three off, alternated in one run.

    uv run python -m loadtests.bench_observability [--seconds 10] [--rounds 3] [--concurrency 16] [--each]

Uses BENCH_DATABASE_URL, or a throwaway PostgreSQL like the test suite. The load comes from
this process (httpx) on the same machine, so absolute numbers are low; read the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.identity.tokens import generate_private_key_pem
from testkit.otlp_receiver import otlp_receiver
from testkit.postgres import migrate, throwaway_postgres
from testkit.server_process import ServerProcess

PASSWORD = "bench-marigold-55-orchard"


@contextlib.contextmanager
def database() -> Iterator[str]:
    if url := os.environ.get("BENCH_DATABASE_URL"):
        yield url
        return
    with throwaway_postgres() as url:
        migrate(url)
        yield url


async def drive(base_url: str, token: str, seconds: float, concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done = 0
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await client.get("/api/v1/users/me")
                response.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


OFF = {"USER_SERVICE_LOGGING__LEVEL": "WARNING", "USER_SERVICE_METRICS__ENABLED": "false"}
CONFIGS: dict[str, dict[str, str]] = {
    "all on": {"USER_SERVICE_LOGGING__LEVEL": "INFO", "OTEL_TRACES_SAMPLER": "always_on"},
    "logs only": {"USER_SERVICE_LOGGING__LEVEL": "INFO", "USER_SERVICE_METRICS__ENABLED": "false"},
    "metrics only": {"USER_SERVICE_LOGGING__LEVEL": "WARNING"},
    "traces only": {**OFF, "OTEL_TRACES_SAMPLER": "always_on"},
    "all off": OFF,
}


def run_once(url: str, key: Path, workdir: Path, config: str, otlp_endpoint: str, args: argparse.Namespace) -> float:
    env = dict(CONFIGS[config])
    if "OTEL_TRACES_SAMPLER" in env:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    server = (
        ServerProcess(database_url=url, signing_key_file=key, log_file=workdir / "server.log", **env).untraced().start()
    )
    try:
        name = f"bench{time.time_ns()}"
        body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        httpx.post(f"{server.base_url}/api/v1/auth/register", json=body).raise_for_status()
        login = httpx.post(f"{server.base_url}/api/v1/auth/login", json={"username": name, "password": PASSWORD})
        token = login.json()["access_token"]
        asyncio.run(drive(server.base_url, token, 2, args.concurrency))  # warm-up
        return asyncio.run(drive(server.base_url, token, args.seconds, args.concurrency))
    finally:
        server.stop()
        (workdir / "server.log").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--each", action="store_true", help="also measure logs, metrics and traces one at a time")
    args = parser.parse_args()
    configs = list(CONFIGS) if args.each else ["all on", "all off"]
    results: dict[str, list[float]] = {config: [] for config in configs}
    with tempfile.TemporaryDirectory() as tmp, database() as url, otlp_receiver() as receiver:
        workdir = Path(tmp)
        key = workdir / "signing.pem"
        key.write_bytes(generate_private_key_pem())
        for round_number in range(args.rounds):
            # Rotate the order every round so that no configuration always runs first.
            order = configs[round_number % len(configs) :] + configs[: round_number % len(configs)]
            for config in order:
                rps = run_once(url, key, workdir, config, receiver.endpoint, args)
                results[config].append(rps)
                print(f"round {round_number + 1}: {config:<13} {rps:8.1f} req/s", flush=True)
    baseline = statistics.median(results["all off"])
    print(f"\nGET /api/v1/users/me, {args.concurrency} connections, {args.seconds:.0f} s x {args.rounds} rounds")
    print(f"{'configuration':<14} {'req/s (median)':>15} {'vs all off':>11}")
    for config in configs:
        median = statistics.median(results[config])
        print(f"{config:<14} {median:15.1f} {median / baseline:11.1%}")


if __name__ == "__main__":
    main()
