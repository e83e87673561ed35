"""Capacity benchmark of the login path, all figures from one run on one machine.

    uv run python -m loadtests.bench_capacity [--seconds 8] [--plot docs/img/capacity.png]

1. raw argon2 verify throughput, same parameters, as many threads as the service's pool,
   in a fresh process with the default allocator (and, for comparison, with the memory
   setting the service applies);
2. the service's successful logins per second at saturation, through HTTP;
3. their ratio, the login efficiency;
4. p99 of GET /health/live and GET /api/v1/users/me while logins saturate the pool;
5. GET /api/v1/users/me requests per second with no login load, at 16 and at 256
   connections (all must be answered);
6. peak RSS during the login storm against start-up RSS + pool size x argon2 memory.
It prints a table and writes a plot of throughput and latency against offered load.
Load comes from wrk (Debian package ``wrk``), which needs little CPU, so the cores stay
with the service. BENCH_DATABASE_URL, or a throwaway PostgreSQL as in the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.identity.tokens import generate_private_key_pem
from app.settings import PasswordSettings
from loadtests.bench_observability import database
from testkit.server_process import ServerProcess

PASSWORD = "bench-marigold-55-orchard"
CONCURRENCY_STEPS = (1, 2, 4, 8, 16, 32, 64)

RAW_ARGON2 = """
import json, sys, threading, time
from argon2 import PasswordHasher, Type
params, threads, seconds, keep_mapped = json.loads(sys.argv[1])
if keep_mapped:
    from app.identity.memory import keep_hash_memory_mapped
    keep_hash_memory_mapped()
hasher = PasswordHasher(type=Type.ID, **params)
stored = hasher.hash("x" * 24)
counts = [0] * threads
deadline = time.perf_counter() + seconds
def work(i):
    while time.perf_counter() < deadline:
        hasher.verify(stored, "x" * 24)
        counts[i] += 1
started = time.perf_counter()
pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
[t.start() for t in pool]; [t.join() for t in pool]
print(sum(counts) / (time.perf_counter() - started))
"""


@dataclass
class WrkResult:
    requests_per_second: float
    ok_per_second: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]


def wrk(
    url: str, *, connections: int, seconds: float, script: Path | None = None, header: str | None = None
) -> WrkResult:
    command = [
        "wrk",
        "-t1" if connections < 8 else "-t2",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "30s",
    ]
    if script:
        command += ["-s", str(script)]
    if header:
        command += ["-H", header]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = _ms(re.search(r"requests in ([\d.]+\w+),", out).group(1)) / 1000  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return WrkResult(
        requests_per_second=total / elapsed,
        ok_per_second=(total - non_2xx) / elapsed,
        non_2xx=non_2xx,
        socket_errors=errors,
        p50_ms=_ms(re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE).group(1)),  # type: ignore[union-attr]
        p99_ms=_ms(re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1)),  # type: ignore[union-attr]
    )


def raw_argon2(settings: PasswordSettings, threads: int, seconds: float, *, keep_mapped: bool) -> float:
    params = {
        "time_cost": settings.time_cost,
        "memory_cost": settings.memory_cost_kib,
        "parallelism": settings.parallelism,
    }
    argument = json.dumps([params, threads, seconds, keep_mapped])
    out = subprocess.run([sys.executable, "-c", RAW_ARGON2, argument], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def wait_until_idle(base: str, timeout: float = 60.0) -> None:
    """Between steps: hashes queued by a step's last requests keep running after wrk has
    gone (their threads finish what they started), so the next step would start on top
    of leftover work and shed for it."""
    deadline = time.monotonic() + timeout
    gauges = ("user_service_password_hash_running ", "user_service_password_hash_queue_depth ")
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics").text
        busy = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(gauges))
        if busy == 0:
            return
        time.sleep(0.2)


def rss_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def main() -> None:  # noqa: PLR0915 - one benchmark, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--plot", type=Path, default=Path("docs/img/capacity.png"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    settings = PasswordSettings()  # the service's defaults, as deployed
    threads = settings.pool_size
    seconds = args.seconds

    raw_default = raw_argon2(settings, threads, seconds, keep_mapped=False)
    raw_mapped = raw_argon2(settings, threads, seconds, keep_mapped=True)
    print(
        f"raw argon2, {threads} threads: {raw_default:.1f}/s default allocator, {raw_mapped:.1f}/s memory kept mapped"
    )

    with tempfile.TemporaryDirectory() as tmp, database() as url:
        workdir = Path(tmp)
        key = workdir / "signing.pem"
        key.write_bytes(generate_private_key_pem())
        login_script = workdir / "login.lua"
        name = f"bench{time.time_ns()}"
        body = json.dumps({"username": name, "password": PASSWORD})
        login_script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
        )
        server = (
            ServerProcess(
                database_url=url,
                signing_key_file=key,
                log_file=workdir / "server.log",
                USER_SERVICE_PASSWORDS__TIME_COST=str(settings.time_cost),
                USER_SERVICE_PASSWORDS__MEMORY_COST_KIB=str(settings.memory_cost_kib),
                USER_SERVICE_LOGGING__LEVEL="WARNING",  # a line per request would be a benchmark of the disk
            )
            .untraced()
            .start()
        )
        try:
            base = server.base_url
            pid = server.process.pid if server.process else 0
            httpx.post(
                f"{base}/api/v1/auth/register",
                json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
            ).raise_for_status()
            token = httpx.post(f"{base}/api/v1/auth/login", json={"username": name, "password": PASSWORD}).json()[
                "access_token"
            ]
            bearer = f"Authorization: Bearer {token}"
            rss_start = rss_kib(pid, "VmRSS")

            steps = []
            for connections in CONCURRENCY_STEPS:
                wait_until_idle(base)
                result = wrk(f"{base}/api/v1/auth/login", connections=connections, seconds=seconds, script=login_script)
                steps.append((connections, result))
                print(
                    f"logins, {connections:3d} connections: {result.ok_per_second:6.1f} ok/s, {result.non_2xx} shed,"
                    f" p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms"
                )
            # Saturation without shedding: the pool busy, its queue never full.
            saturated = max((r for c, r in steps if r.non_2xx == 0), key=lambda r: r.ok_per_second)

            wait_until_idle(base)
            storm = subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    "-c16",
                    f"-d{round(seconds) + 4}s",
                    "-s",
                    str(login_script),
                    f"{base}/api/v1/auth/login",
                ],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(2)
            live = wrk(f"{base}/health/live", connections=1, seconds=seconds / 2)
            me_under_storm = wrk(f"{base}/api/v1/users/me", connections=4, seconds=seconds / 2, header=bearer)
            storm.wait()
            rss_peak = rss_kib(pid, "VmHWM")

            wait_until_idle(base)
            me_16 = wrk(f"{base}/api/v1/users/me", connections=16, seconds=seconds, header=bearer)
            me_256 = wrk(f"{base}/api/v1/users/me", connections=256, seconds=seconds, header=bearer)
        finally:
            server.stop()

    bound_kib = rss_start + threads * settings.memory_cost_kib
    efficiency_default = saturated.ok_per_second / raw_default
    rows = [
        (
            "argon2id parameters",
            f"m={settings.memory_cost_kib // 1024} MiB, t={settings.time_cost},"
            f" p={settings.parallelism}; pool {threads}",
        ),
        ("(1) raw argon2 verifies/s, default allocator", f"{raw_default:.1f}"),
        ("    raw argon2 verifies/s, memory kept mapped", f"{raw_mapped:.1f}"),
        ("(2) service logins/s at saturation (no shed)", f"{saturated.ok_per_second:.1f}"),
        ("(3) login efficiency vs raw, default allocator", f"{efficiency_default:.2f}"),
        ("    login efficiency vs raw, same allocator", f"{saturated.ok_per_second / raw_mapped:.2f}"),
        ("(4) /health/live p99 during the login storm", f"{live.p99_ms:.1f} ms"),
        ("    /users/me p99 during the login storm", f"{me_under_storm.p99_ms:.1f} ms"),
        ("(5) /users/me req/s, 16 connections, no logins", f"{me_16.ok_per_second:.0f} (p99 {me_16.p99_ms:.1f} ms)"),
        (
            "    /users/me, 256 connections",
            f"{me_256.ok_per_second:.0f} req/s, p99 {me_256.p99_ms:.1f} ms,"
            f" {me_256.non_2xx} non-2xx, {me_256.socket_errors} socket errors",
        ),
        (
            "(6) peak RSS in the storm vs bound",
            f"{rss_peak / 1024:.0f} MiB vs {bound_kib / 1024:.0f} MiB"
            f" (start {rss_start / 1024:.0f} + {threads} x {settings.memory_cost_kib // 1024})",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    plot(steps, raw_default, raw_mapped, args.plot)
    print(f"\nplot: {args.plot}")


def plot(steps: list[tuple[int, WrkResult]], raw_default: float, raw_mapped: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    connections = [c for c, _ in steps]
    figure, (throughput, latency) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    throughput.plot(connections, [r.ok_per_second for _, r in steps], "o-", label="successful logins/s")
    throughput.axhline(
        raw_default, color="grey", linestyle=":", label=f"raw argon2, default allocator ({raw_default:.0f}/s)"
    )
    throughput.axhline(
        raw_mapped, color="black", linestyle=":", label=f"raw argon2, memory kept mapped ({raw_mapped:.0f}/s)"
    )
    throughput.set_ylim(0, max(raw_mapped, *(r.ok_per_second for _, r in steps)) * 1.3)
    throughput.set_ylabel("logins per second")
    shed = throughput.twinx()
    shed.bar(
        connections,
        [r.requests_per_second - r.ok_per_second for _, r in steps],
        width=[c * 0.3 for c in connections],
        color="tab:orange",
        alpha=0.35,
        label="shed (503) per second",
    )
    shed.set_ylabel("503 sheds per second")
    lines = throughput.get_legend_handles_labels()[0] + shed.get_legend_handles_labels()[0]
    labels = throughput.get_legend_handles_labels()[1] + shed.get_legend_handles_labels()[1]
    throughput.legend(lines, labels, loc="lower left", fontsize="small")
    throughput.set_title(
        "POST /api/v1/auth/login, one process on 2 cores (argon2id m=46 MiB, t=2, p=1; pool 2, queue 32)"
    )
    latency.plot(connections, [r.p50_ms for _, r in steps], "s-", color="tab:red", label="p50")
    latency.plot(connections, [r.p99_ms for _, r in steps], "^-", color="tab:purple", label="p99")
    latency.set_xscale("log", base=2)
    latency.set_xlabel("offered load: concurrent login connections (closed loop, no back-off)")
    latency.set_ylabel("latency (ms)")
    latency.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
