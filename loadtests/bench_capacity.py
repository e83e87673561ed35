"""Performance of one service process as a performance engineer measures it, every figure
of a database from one run on one machine, on PostgreSQL and on the embedded SQLite:

    uv run python -m loadtests.bench_capacity [--seconds 10] [--databases postgres,sqlite]
                                              [--plot docs/img/capacity.png]

Load comes from ``wrk`` (Debian's package), which needs little CPU, on the same machine;
the service runs as production runs it (``python -m app``, argon2id at its defaults, one
hashing thread per core, logs at WARNING so the disk is not measured, rate limits off,
the login throttle on). Each row below says what it measures; the goal column is the
performance issue's, each a ratio or a bound within the same run, because absolute rates
on a shared machine move by a third from run to run.

- raw argon2 verifies/s at the service's parameters, as many threads as the pool, in a
  fresh process, with the default allocator and with the memory kept mapped as the
  service keeps it: the ceiling (row "raw argon2");
- successful logins/s at saturation: 8 closed-loop connections, each login a random one
  of 2,000 seeded accounts; the login efficiency is its ratio to the raw ceiling;
- GET /api/v1/users/me and GET /health/live at 64 connections, one after the other;
- a login storm (8 connections, saturating the pool) with GET /users/me at 16
  connections and GET /health/live at 1 connection measured during it, against the same
  without the storm; the storm's own logins/s against the saturation rate;
- overload: logins at 64 and 256 closed-loop connections that retry at once and ignore
  Retry-After (successful logins/s against saturation, and every answer's status);
- overload, open loop: Poisson arrivals of logins at 2 and 4 times the saturation rate,
  each sent when it arrives (``loadtests/open_loop.py``), as a crowd of independent users
  sends them: successful logins/s against saturation, and every answer's status;
- GET /users/me at 256 connections: all answered, and the tail;
- GET /users/me at 64 connections with two worker processes against one.

Then a plot of logins/s and latency against offered load (PostgreSQL) for the README.
BENCH_DATABASE_URL names a PostgreSQL to use; else a throwaway one as in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.identity.tokens import generate_private_key_pem
from app.settings import PasswordSettings
from loadtests.bench_observability import database
from loadtests.wrk import WrkResult, parse_wrk, wait_until_idle, write_login_script, wrk, wrk_command
from testkit.postgres import migrate
from testkit.server_process import LITESTAR_CLI, ROOT, ServerProcess

PASSWORD = "bench-marigold-55-orchard"
SEEDED = 2000
LOGIN = "/api/v1/auth/login"
ME = "/api/v1/users/me"
LIVE = "/health/live"
CURVE = (1, 2, 4, 8, 16, 32, 64, 256)
OPEN_LOOP_MULTIPLES = (2, 4)

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


def raw_argon2(settings: PasswordSettings, threads: int, seconds: float, *, keep_mapped: bool) -> float:
    params = {"time_cost": settings.time_cost, "memory_cost": settings.memory_cost_kib, "parallelism": 1}
    argument = json.dumps([params, threads, seconds, keep_mapped])
    out = subprocess.run([sys.executable, "-c", RAW_ARGON2, argument], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def rss_kib(pid: int, field_name: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field_name}:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def statuses(base: str) -> dict[str, float]:
    """Login answers by status so far, from the service's own request counter."""
    found: dict[str, float] = {}
    pattern = re.compile(
        r'^http_server_request_duration_seconds_count\{(?=[^}]*http_route="/api/v1/auth/login")'
        r'(?=[^}]*http_request_method="POST")[^}]*http_response_status_code="(\d+)"[^}]*\} (\S+)$',
        re.M,
    )
    for status, value in pattern.findall(httpx.get(f"{base}/metrics").text):
        found[status] = found.get(status, 0.0) + float(value)
    return found


@dataclass
class Figures:
    """One database's measurements."""

    database: str
    curve: list[tuple[int, WrkResult]] = field(default_factory=list)
    curve_statuses: dict[int, dict[str, float]] = field(default_factory=dict)
    live_64: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    me_64: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    me_16_quiet: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    me_16_storm: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    live_1_quiet: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    live_1_storm: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    storm: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    me_256: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    open_loop: dict[int, dict[str, Any]] = field(default_factory=dict)
    me_64_two_workers: WrkResult = field(default_factory=lambda: WrkResult(0, 0, 0, 0, 0, 0))
    rss_start_kib: int = 0
    rss_peak_kib: int = 0

    def at(self, connections: int) -> WrkResult:
        return dict(self.curve)[connections]


class Service:
    """The service on ``url``, with seeded accounts, a logged-in user and a login script."""

    def __init__(self, url: str, workdir: Path, settings: PasswordSettings, *, workers: int = 1) -> None:
        key = workdir / "signing.pem"
        if not key.exists():
            key.write_bytes(generate_private_key_pem())
        self.server = ServerProcess(
            database_url=url,
            signing_key_file=key,
            log_file=workdir / f"server-{workers}.log",
            USER_SERVICE_PASSWORDS__TIME_COST=str(settings.time_cost),
            USER_SERVICE_PASSWORDS__MEMORY_COST_KIB=str(settings.memory_cost_kib),
            USER_SERVICE_PASSWORDS__POOL_SIZE=str(settings.pool_size),
            USER_SERVICE_PASSWORDS__QUEUE_SIZE=str(settings.queue_size),
            USER_SERVICE_SERVER__WORKERS=str(workers),
            USER_SERVICE_LOGGING__LEVEL="WARNING",  # a line per request would be a benchmark of the disk
            USER_SERVICE_MAIL__NEW_LOGIN_NOTICE="false",
        ).untraced()
        self.workdir = workdir
        self.prefix = f"bench{time.time_ns() % 10**6}x"
        self.login_script = write_login_script(
            workdir / f"login-{self.prefix}.lua", prefix=self.prefix, count=SEEDED, shared_password=PASSWORD
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[Service]:
        migrate(self.server.env["USER_SERVICE_DB__URL"], env=self.server.env, timeout=300)
        seeded = subprocess.run(
            [*LITESTAR_CLI, "users", "seed", "--count", str(SEEDED), "--prefix", self.prefix],
            cwd=ROOT,
            env={**self.server.env, "USER_SERVICE_SEED_PASSWORD": PASSWORD},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if seeded.returncode:
            raise RuntimeError(f"seeding failed: {seeded.stderr[-2000:]}")
        self.server.start(timeout=90)
        try:
            token = httpx.post(
                f"{self.base}{LOGIN}", json={"username": f"{self.prefix}000001", "password": PASSWORD}, timeout=30
            ).json()["access_token"]
            self.bearer = f"Authorization: Bearer {token}"
            yield self
        finally:
            self.server.stop()

    @property
    def base(self) -> str:
        return self.server.base_url

    @property
    def pid(self) -> int:
        return self.server.process.pid if self.server.process else 0

    def logins(self, connections: int, seconds: float) -> WrkResult:
        wait_until_idle(self.base)
        return wrk(f"{self.base}{LOGIN}", connections=connections, seconds=seconds, script=self.login_script)

    def me(self, connections: int, seconds: float) -> WrkResult:
        return wrk(f"{self.base}{ME}", connections=connections, seconds=seconds, header=self.bearer)

    def live(self, connections: int, seconds: float) -> WrkResult:
        return wrk(f"{self.base}{LIVE}", connections=connections, seconds=seconds)

    def open_loop(self, rate: float, seconds: float) -> dict[str, Any]:
        wait_until_idle(self.base)
        command = [sys.executable, "-m", "loadtests.open_loop", self.base, f"--rate={rate:.1f}"]
        command += [f"--seconds={seconds:g}", f"--prefix={self.prefix}", f"--count={SEEDED}", f"--password={PASSWORD}"]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return dict(json.loads(out))


def measure(database_name: str, url: str, settings: PasswordSettings, seconds: float, workdir: Path) -> Figures:
    figures = Figures(database_name)
    with Service(url, workdir, settings).running() as service:
        figures.rss_start_kib = rss_kib(service.pid, "VmRSS")
        service.logins(2, 2)  # warm: statements compiled, connections opened
        for connections in CURVE:
            before = statuses(service.base)
            result = service.logins(connections, seconds if connections in (8, 64, 256) else seconds / 2)
            wait_until_idle(service.base)
            after = statuses(service.base)
            figures.curve.append((connections, result))
            figures.curve_statuses[connections] = {k: v - before.get(k, 0.0) for k, v in after.items()}
            print(
                f"  [{database_name}] logins, {connections:3d} connections: {result.ok_per_second:5.1f} ok/s,"
                f" {result.non_2xx} not 2xx, p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms",
                flush=True,
            )
        figures.rss_peak_kib = rss_kib(service.pid, "VmHWM")
        for multiple in OPEN_LOOP_MULTIPLES:
            figures.open_loop[multiple] = found = service.open_loop(multiple * figures.at(8).ok_per_second, seconds)
            print(
                f"  [{database_name}] open loop at {multiple}x saturation: {found['ok_per_second']:5.1f} ok/s,"
                f" {found['statuses']}, ok p50 {found['ok_p50_ms']:.0f} ms, p99 {found['ok_p99_ms']:.0f} ms",
                flush=True,
            )

        figures.live_64 = service.live(64, seconds)
        figures.me_64 = service.me(64, seconds)
        figures.me_16_quiet = service.me(16, seconds)
        figures.live_1_quiet = service.live(1, seconds)
        wait_until_idle(service.base)
        storm_command = wrk_command(
            f"{service.base}{LOGIN}", connections=8, seconds=2 * seconds + 3, script=service.login_script
        )
        storm = subprocess.Popen(storm_command, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the pool saturated before the probes start
        figures.me_16_storm = service.me(16, seconds)
        figures.live_1_storm = service.live(1, seconds)
        out, _ = storm.communicate()
        figures.storm = parse_wrk(out)
        wait_until_idle(service.base)
        figures.me_256 = service.me(256, seconds)
        print(f"  [{database_name}] reads and storm measured", flush=True)

    with Service(url, workdir, settings, workers=2).running() as two:
        two.me(64, 2)  # both workers warm
        figures.me_64_two_workers = two.me(64, seconds)
    return figures


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(figures: list[Figures], raw_default: float, raw_mapped: float, settings: PasswordSettings) -> str:
    one_verify_ms = 1000 * settings.pool_size / raw_mapped
    rows: list[tuple[str, list[str], str]] = []

    def row(label: str, goal: str, value: Callable[[Figures], str]) -> None:
        rows.append((label, [value(f) for f in figures], goal))

    rows.append(("raw argon2 verifies/s, default allocator", [f"{raw_default:.1f}"] * len(figures), "(ceiling)"))
    rows.append(("raw argon2 verifies/s, memory kept mapped", [f"{raw_mapped:.1f}"] * len(figures), "(ceiling)"))
    row("logins/s at saturation (8 conns)", "", lambda f: f"{f.at(8).ok_per_second:.1f}")
    row("login efficiency, same allocator", ">= 0.95", lambda f: _ratio(f.at(8).ok_per_second, raw_mapped))
    row("login efficiency, default allocator", "", lambda f: _ratio(f.at(8).ok_per_second, raw_default))
    row("/health/live 64 conns: req/s", "", lambda f: f"{f.live_64.ok_per_second:,.0f}")
    row("/users/me 64 conns: req/s", "", lambda f: f"{f.me_64.ok_per_second:,.0f}")
    row("  /me over /health/live", ">= 0.7", lambda f: _ratio(f.me_64.ok_per_second, f.live_64.ok_per_second))
    row("  /me p50 / p99", "p99 <= 3 x p50", lambda f: f"{f.me_64.p50_ms:.1f} / {f.me_64.p99_ms:.1f} ms")
    row(
        "/me 16 conns p99: quiet / login storm",
        "storm <= 1.5 x quiet",
        lambda f: (
            f"{f.me_16_quiet.p99_ms:.1f} / {f.me_16_storm.p99_ms:.1f} ms"
            f" ({_ratio(f.me_16_storm.p99_ms, f.me_16_quiet.p99_ms)})"
        ),
    )
    row(
        "/health/live 1 conn p99: quiet / storm",
        f"storm <= {one_verify_ms / 5:.0f} ms",
        lambda f: f"{f.live_1_quiet.p99_ms:.2f} / {f.live_1_storm.p99_ms:.2f} ms",
    )
    row(
        "  logins/s during the storm vs saturation",
        ">= 0.9",
        lambda f: _ratio(f.storm.ok_per_second, f.at(8).ok_per_second),
    )
    for connections in (64, 256):

        def overload(f: Figures, c: int = connections) -> str:
            return f"{f.at(c).ok_per_second:.1f} ({_ratio(f.at(c).ok_per_second, f.at(8).ok_per_second)})"

        def answers(f: Figures, c: int = connections) -> str:
            return " ".join(f"{k}:{v:.0f}" for k, v in sorted(f.curve_statuses[c].items()) if v)

        row(f"overload {connections} conns, no back-off: logins/s", ">= 0.9 x saturation", overload)
        row("  answers by status", "200/401/429/503 only", answers)
    for multiple in OPEN_LOOP_MULTIPLES:

        def open_loop(f: Figures, m: int = multiple) -> str:
            ok = f.open_loop[m]["ok_per_second"]
            return f"{ok:.1f} ({_ratio(ok, f.at(8).ok_per_second)})"

        def open_answers(f: Figures, m: int = multiple) -> str:
            found = f.open_loop[m]
            missing = found["refusals_without_retry_after"]
            lost = found["dropped_by_client"] + sum(found["errors"].values())
            return (
                " ".join(f"{k}:{v}" for k, v in found["statuses"].items())
                + (f"; {missing} refusals without Retry-After" if missing else "")
                + (f"; {lost} unanswered" if lost else "")
            )

        row(f"overload, open loop at {multiple} x saturation: logins/s", ">= 0.9 x saturation", open_loop)
        row("  answers by status", "200/401/429/503 only", open_answers)
    row(
        "/me 256 conns: answered, p50 / p99",
        "all, p99 <= 3 x p50",
        lambda f: (
            f"{f.me_256.total - f.me_256.non_2xx:,} ok, {f.me_256.non_2xx} not, "
            f"{f.me_256.socket_errors} errors; {f.me_256.p50_ms:.0f} / {f.me_256.p99_ms:.0f} ms"
        ),
    )
    row(
        "/me 64 conns, 2 workers over 1",
        ">= 1.6",
        lambda f: (
            f"{f.me_64_two_workers.ok_per_second:,.0f} req/s"
            f" ({_ratio(f.me_64_two_workers.ok_per_second, f.me_64.ok_per_second)})"
        ),
    )
    row(
        "peak RSS vs bound",
        "<= start + pool x m",
        lambda f: (
            f"{f.rss_peak_kib / 1024:.0f} / "
            f"{(f.rss_start_kib + settings.pool_size * settings.memory_cost_kib) / 1024:.0f} MiB"
        ),
    )
    headers = ["figure", *(f.database for f in figures), "goal"]
    cells = [[label, *values, goal] for label, values, goal in rows]
    widths = [max(len(str(r[i])) for r in [headers, *cells]) for i in range(len(headers))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--databases", default="postgres,sqlite", help="postgres, sqlite or both (comma-separated)")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/capacity.png"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    settings = PasswordSettings()  # the service's defaults, as deployed
    raw_default = raw_argon2(settings, settings.pool_size, args.seconds, keep_mapped=False)
    raw_mapped = raw_argon2(settings, settings.pool_size, args.seconds, keep_mapped=True)
    print(f"raw argon2, {settings.pool_size} threads: {raw_default:.1f}/s default, {raw_mapped:.1f}/s kept mapped")
    figures: list[Figures] = []
    for name in [n.strip() for n in args.databases.split(",") if n.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if name == "sqlite":
                figures.append(
                    measure(name, f"sqlite+aiosqlite:///{workdir}/bench.db", settings, args.seconds, workdir)
                )
            elif name == "postgres":
                with database() as url:
                    figures.append(measure(name, url, settings, args.seconds, workdir))
            else:
                sys.exit(f"unknown database {name!r}: postgres or sqlite")
    print(
        f"\nargon2id m={settings.memory_cost_kib // 1024} MiB t={settings.time_cost} p=1, pool {settings.pool_size},"
        f" queue {settings.queue_size}; wrk on the same machine; {args.seconds:g} s per figure\n"
    )
    print(table(figures, raw_default, raw_mapped, settings))
    curve_of = next((f for f in figures if f.database == "postgres"), figures[0])
    plot(curve_of, raw_default, raw_mapped, args.plot)
    print(f"\nplot: {args.plot}")


def plot(figures: Figures, raw_default: float, raw_mapped: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = figures.curve
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
    throughput.set_title(f"POST /api/v1/auth/login, one process on 2 cores, {figures.database}")
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
