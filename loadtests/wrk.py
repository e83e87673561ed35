"""wrk (Debian's package), the closed-loop HTTP client the benchmarks measure with: it
needs little CPU, so on a shared 2-core machine its figures are the service's more than
Locust's are. Used by loadtests/bench_capacity.py and by the runner's cross-check of a
capacity profile (``--cross-check-wrk``)."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WrkResult:
    requests_per_second: float
    ok_per_second: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    total: int = 0


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]


def wrk_command(
    url: str, *, connections: int, seconds: float, script: Path | None = None, header: str | None = None
) -> list[str]:
    command = ["wrk", "-t1" if connections < 8 else "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--latency", "--timeout", "30s"]
    if script:
        command += ["-s", str(script)]
    if header:
        command += ["-H", header]
    return [*command, url]


def parse_wrk(out: str) -> WrkResult:
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
        total=total,
    )


def wrk(
    url: str, *, connections: int, seconds: float, script: Path | None = None, header: str | None = None
) -> WrkResult:
    command = wrk_command(url, connections=connections, seconds=seconds, script=script, header=header)
    return parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def wait_until_idle(base: str, timeout: float = 60.0) -> None:
    """Between measurements: hashes queued by the last one's requests keep running after
    wrk has gone, so the next would start on top of leftover work."""
    deadline = time.monotonic() + timeout
    gauges = ("user_service_password_hash_running ", "user_service_password_hash_queue_depth ")
    while time.monotonic() < deadline:
        text = _get(f"{base}/metrics")
        if sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(gauges)) == 0:
            return
        time.sleep(0.2)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the benchmark's own service  # nosec B310
        return str(response.read().decode())


def write_login_script(path: Path, *, prefix: str, count: int, shared_password: str) -> Path:
    """A wrk script that logs in as a random one of the seeded accounts
    ``<prefix>000001`` ... per request, as a storm of many users does (one account would
    measure the login throttle's line for one name instead), each from a random address of
    198.18.0.0/16 (RFC 2544's benchmarking range, as the Locust scenarios' people) in
    X-Forwarded-For, which a service trusting 127.0.0.1 as its proxy believes: its
    per-address rate limits see many people, not one client."""
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "math.randomseed(os.time())\n"
        "request = function()\n"
        '  wrk.headers["X-Forwarded-For"] = string.format("198.18.%d.%d", math.random(0, 255), math.random(1, 254))\n'
        f'  local body = string.format(\'{{"username":"{prefix}%06d","password":"{shared_password}"}}\','
        f" math.random(1, {count}))\n"
        "  return wrk.format(nil, nil, nil, body)\nend\n"
    )
    return path
