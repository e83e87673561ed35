"""Headless Locust runs with named profiles and SLO gates.

    uv run python -m loadtests run --profile smoke --start-service
    uv run python -m loadtests run --profile capacity --host http://127.0.0.1:8000
    uv run python -m loadtests run --profile smoke --start-service --workers 2
    uv run python -m loadtests gates loadtests/reports/smoke-20261122T010203Z --profile smoke

``run`` starts Locust headless (``--workers N``: Locust's own master and N worker
processes on this machine), writes its CSV and HTML reports to
``loadtests/reports/<profile>-<UTC time>/`` with the service's own ``/metrics`` at the end
(``service-metrics.txt``, when the service exposes it), evaluates the profile's gates from
``loadtests/slo.toml``, prints the gate table and exits 0 when every gate passes, 1 when
one fails, 2 when the run itself broke (service did not start, Locust crashed, timeout).
Every process it starts is bounded in time and stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from loadtests import run_windows
from loadtests.gates import SLO_FILE, GateResult, SloError, evaluate_report, load_slo, render
from loadtests.profiles import PROFILES_FILE, Profile, ProfileError, load_profiles, parse_duration
from loadtests.wrk import wait_until_idle, write_login_script, wrk
from testkit.ports import free_port
from testkit.server_process import without_coverage

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
REPORTS = HERE / "reports"
CSV_PREFIX = "locust"
STOP_TIMEOUT_SECONDS = 5
# Beyond the profile's own length: Locust's start-up, workers connecting, stopping users.
SLACK_SECONDS = 120

EXIT_PASSED, EXIT_GATE_FAILED, EXIT_BROKEN = 0, 1, 2


def report_dir_for(profile: str, root: Path = REPORTS) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / f"{profile}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{profile}-{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path


def locust_command(profile: Profile, host: str, report_dir: Path, *, master_workers: int = 0) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--csv",
        str(report_dir / CSV_PREFIX),
        "--html",
        str(report_dir / "report.html"),
        "--only-summary",
        # Our gates decide the exit code; Locust's own would be 1 on any failure at all.
        "--exit-code-on-error",
        "0",
        "--stop-timeout",
        str(STOP_TIMEOUT_SECONDS),
        "--loglevel",
        "INFO",
    ]
    if not profile.is_step_load:
        command += ["--users", str(profile.users), "--spawn-rate", f"{profile.spawn_rate:g}"]
        command += ["--run-time", f"{int(profile.run_time_seconds)}s"]
    if profile.tags:
        command += ["--tags", *profile.tags]
    if master_workers:
        command += ["--master", "--master-bind-host", "127.0.0.1", "--expect-workers", str(master_workers)]
        command += ["--expect-workers-max-wait", "60"]
    return command


def worker_command(master_port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker"),
        *("--master-host", "127.0.0.1", "--master-port", str(master_port), "--loglevel", "WARNING"),
    ]


# Where a run's traces go: the standard OpenTelemetry variables, as the service reads them.
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def with_otel(env: dict[str, str]) -> dict[str, str]:
    """The environment for Locust with ``--otel`` when an OTLP endpoint is set, else as is.
    Defaults fit the service's own collector: OTLP over HTTP/protobuf (Locust's default is
    gRPC), the service name "locust", and no log export (Locust's log lines are not
    telemetry anyone queries); any of them set by the caller wins."""
    if not any(env.get(name) for name in OTLP_ENDPOINT_VARIABLES):
        return env
    defaults = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "locust",
        "OTEL_LOGS_EXPORTER": "none",
    }
    return {**defaults, **env}


def otel_enabled(env: dict[str, str]) -> bool:
    return any(env.get(name) for name in OTLP_ENDPOINT_VARIABLES)


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT (Locust writes its reports on the way out), then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def _workers(count: int, port: int, env: dict[str, str], report_dir: Path) -> Iterator[list[int]]:
    """Locust workers on this machine; yields their process ids (the generator's CPU)."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            with (report_dir / f"worker-{index + 1}.log").open("wb") as log:
                command = [*worker_command(port), *(["--otel"] if otel_enabled(env) else [])]
                worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent)
            processes.append(worker)
        yield [process.pid for process in processes]
    finally:
        # Workers quit when the master does; give them a moment, then make sure.
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _stop(process, grace=5)


def run_locust(profile: Profile, host: str, report_dir: Path, env: dict[str, str], workers: int) -> int:
    """Run Locust (locally or as master + workers); its exit code, or -1 on timeout."""
    full_env = {**env, "LOADTEST_REPORT_DIR": str(report_dir), "PYTHONUNBUFFERED": "1"}
    # Each worker takes its own slice of the second-factor accounts (second_factor.py).
    full_env["LOADTEST_WORKERS"] = str(max(workers, 1))
    full_env = with_otel(full_env)
    otel = ["--otel"] if otel_enabled(full_env) else []  # every process sends its own spans
    command = [*locust_command(profile, host, report_dir, master_workers=workers), *otel]
    deadline = profile.expected_seconds + SLACK_SECONDS
    with contextlib.ExitStack() as stack:
        if workers:
            port = free_port()
            command += ["--master-bind-port", str(port)]
            worker_pids = stack.enter_context(_workers(workers, port, full_env, report_dir))
            # The master's shape adds its own CPU to the workers' (loadtests/machine.py).
            full_env = {**full_env, "LOADTEST_GENERATOR_PIDS": ",".join(map(str, worker_pids))}
        print(f"locust: {' '.join(command[2:])}", flush=True)
        master = subprocess.Popen(command, env=full_env, cwd=HERE.parent)
        try:
            return master.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            print(f"locust: still running after {deadline:.0f} s, stopping it", file=sys.stderr)
            _stop(master, grace=30)
            return -1
        except BaseException:
            _stop(master, grace=30)
            raise


# The closed-loop client of the cross-check: as many connections as bench_capacity's
# saturation row, enough to keep a pool of a few hashing threads busy.
WRK_CONNECTIONS = 8


def cross_check_with_wrk(host: str, env: Mapping[str, str], report_dir: Path, seconds: float) -> None:
    """wrk logs in as the seeded users against the service the profile just measured, and
    its logins/s go into saturation.json beside the profile's highest rate: the capacity
    profile's answer should be within 15 % of an independent closed-loop client's on the
    same machine (issue 17). Locust has stopped by now, so wrk has the machine it had."""
    summary_file = report_dir / "saturation.json"
    script = write_login_script(
        report_dir / "wrk-login.lua",
        prefix=env["LOADTEST_USER_PREFIX"],
        count=int(env["LOADTEST_USER_COUNT"]),
        shared_password=env["LOADTEST_PASSWORD"],
    )
    wait_until_idle(host)  # the step load's last logins still queued for the pool
    result = wrk(f"{host}/api/v1/auth/login", connections=WRK_CONNECTIONS, seconds=seconds, script=script)
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    peak = float(summary.get("peak_watched_ok_per_s") or 0.0)
    pool_peak = summary.get("peak_hashes_per_s")
    ok = result.ok_per_second
    summary["wrk_cross_check"] = {
        "connections": WRK_CONNECTIONS,
        "seconds": seconds,
        "logins_ok_per_s": round(ok, 1),
        "p99_ms": result.p99_ms,
        # The watched request's peak: the whole answer for a login-only profile, a share of
        # the pool's for a mix (wrong passwords and sign-ups hash too).
        "profile_over_wrk": round(peak / ok, 3) if ok else None,
        # Each wrk login is one verify: the pool's peak over wrk's is the hashing path's
        # saturation point against an independent client's, whatever the profile's mix.
        "pool_over_wrk": round(float(pool_peak) / ok, 3) if ok and pool_peak is not None else None,
    }
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")


# Who used the machine in each step: Locust, the service, everything else (in cores), the
# hashing pool's busy fraction, the mean verify time and the share of it on a core
# (loadtests/machine.py).
STEP_MACHINE_COLUMNS = (
    "generator_cpu",
    "service_cpu",
    "other_cpu",
    "pool_busy",
    "hashes_per_s",
    "verify_ms",
    "verify_on_core",
)


def _agreement(ratio: float | None) -> str:
    return "within 15 %" if ratio is not None and abs(1 - ratio) <= 0.15 else "NOT within 15 %"


def print_steps(report_dir: Path) -> None:
    """The capacity profile's per-step table and where it stopped."""
    steps = report_dir / "steps.csv"
    if not steps.exists():
        return
    with steps.open(newline="") as source:
        rows = list(csv.DictReader(source))
    columns = ["step", "users", "offered_per_s", "requests_per_s", "watched_ok_per_s", "watched_p50_ms"]
    columns += ["watched_p95_ms"]
    columns += ["watched_p99_ms", "error_ratio", "shed_ratio", *STEP_MACHINE_COLUMNS, "over_limit"]
    widths = {c: max(len(c), *(len(r.get(c) or "") for r in rows)) for c in columns}
    print("\nstep load (watched request: see saturation.json; CPU in cores, loadtests/machine.py)")
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join((row.get(c) or "").ljust(widths[c]) for c in columns).rstrip())
    summary = report_dir / "saturation.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        print(f"stopped because: {data['stopped_because']}")
        print(f"verdict: {data['verdict']}")
        if peak := data.get("peak_step"):
            busy = f" with the hashing pool {float(peak['pool_busy']):.0%} busy" if peak.get("pool_busy") != "" else ""
            print(
                f"highest rate of successful {data['limits']['watched']}: {data['peak_watched_ok_per_s']}/s "
                f"(step {peak['step']}, {peak['users']} users{busy})"
            )
        for warning in data.get("warnings", []):
            print(f"warning: {warning}")
        if data.get("peak_hashes_per_s") is not None:
            print(f"hashing pool's highest throughput: {data['peak_hashes_per_s']} jobs/s (verifies and hashes)")
        if check := data.get("wrk_cross_check"):
            print(
                f"wrk, {check['connections']} closed-loop connections for {check['seconds']:g} s: "
                f"{check['logins_ok_per_s']} logins/s; the profile's highest {data['limits']['watched']} "
                f"over wrk's: {check['profile_over_wrk']} ({_agreement(check['profile_over_wrk'])}); the hashing "
                f"pool's highest over wrk's: {check.get('pool_over_wrk')} ({_agreement(check.get('pool_over_wrk'))})"
            )
        if last := data.get("last_step_within_limits"):
            offered = f" offering {last['offered_per_s']}/s" if last.get("offered_per_s") not in (None, "") else ""
            print(
                f"last step within limits: {last['users']} users{offered}, {last['requests_per_s']} req/s, "
                f"{last['watched_ok_per_s']} successful {data['limits']['watched']} per s"
            )


# The service's counters that say what the protections did, as "label: value" lines.
SERVICE_COUNTERS = {
    "user_service_login_attempts": ("login attempts", "result"),
    "user_service_rate_limited": ("refused by the per-address rate limit", "route"),
    "user_service_login_throttle_blocks": ("account blocks started or lengthened", ""),
    "user_service_password_hash_duration_seconds": ("argon2 runs", "operation"),
    "user_service_password_hash_rejections": ("hashes shed (503)", "operation"),
}


def save_service_metrics(host: str, report_dir: Path) -> str | None:
    """GET /metrics at the end of the run into ``service-metrics.txt``; None when the
    service does not expose it there (behind an ingress, as it should be)."""
    url = host.rstrip("/") + "/metrics"
    if not url.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - http(s) checked above  # nosec B310
            text: str = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    (report_dir / "service-metrics.txt").write_text(text)
    return text


def summarize_service_metrics(text: str) -> list[str]:
    """One line per counter of SERVICE_COUNTERS with its non-zero values, e.g.
    "login attempts: success 120, throttled 900"."""
    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in SERVICE_COUNTERS:
            continue
        title, label = SERVICE_COUNTERS[family.name]
        for sample in family.samples:
            # A counter's value is <name>_total; a histogram's number of runs is <name>_count.
            if sample.name in (f"{family.name}_total", f"{family.name}_count") and sample.value:
                key = sample.labels.get(label, "total") if label else "total"
                values.setdefault(title, {})[key] = sample.value
    return [
        f"{title}: " + ", ".join(f"{key} {value:g}" for key, value in sorted(counts.items()))
        for title, counts in values.items()
    ]


def write_gates(report_dir: Path, results: list[GateResult], table: str) -> None:
    (report_dir / "gates.txt").write_text(table + "\n")
    (report_dir / "gates.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


def profile_to_run(args: argparse.Namespace) -> Profile:
    """The profile named on the command line with its overrides; a ProfileError for any
    combination of options that cannot run, before any load is started."""
    profiles = load_profiles(args.profiles)
    if args.profile not in profiles:
        raise ProfileError(f"no profile {args.profile!r} in {args.profiles}; there are: {', '.join(profiles)}")
    profile = profiles[args.profile]
    if args.run_time:
        if profile.is_step_load:
            raise ProfileError("--run-time does not apply to a step-load profile (it stops by itself)")
        profile = replace(profile, run_time_seconds=parse_duration(args.run_time))
    if args.users:
        profile = replace(profile, users=args.users)
    if not args.start_service and not args.host:
        raise ProfileError("give --host URL (a running service) or --start-service")
    if args.cross_check_wrk and not (args.start_service and profile.is_step_load and shutil.which("wrk")):
        raise ProfileError("--cross-check-wrk needs a step-load profile, --start-service and wrk (apt-get install wrk)")
    return profile


def command_run(args: argparse.Namespace) -> int:
    profile = profile_to_run(args)
    slo = load_slo(args.slo_profile or profile.name, args.slo)  # a broken slo.toml fails before any load
    report_dir = Path(args.report_dir) if args.report_dir else report_dir_for(profile.name)
    report_dir.mkdir(parents=True, exist_ok=True)
    print(f"profile {profile.name}: {profile.description}\nreports: {report_dir}", flush=True)

    # The caller's LOADTEST_* (mix, wrong-password share, credentials) win over the profile's.
    # Locust's processes run without the test suite's coverage tracer (if any).
    env = without_coverage({**os.environ})
    for key, value in profile.locust_env().items():
        env.setdefault(key, value)
    with contextlib.ExitStack() as stack:
        host = args.host
        if args.start_service:
            from loadtests.service import started_service  # imports the app: only when needed

            service = stack.enter_context(started_service(profile, report_dir))
            host = service.base_url
            env.update(service.locust_env)
        started = run_windows.now()
        code = run_locust(profile, host, report_dir, env, args.workers)
        window = run_windows.RunWindow(profile.name, host, started, run_windows.now(), code)
        run_windows.record(window, report_dir)
        if run_windows.annotate(window):
            print("grafana: the run is annotated", flush=True)
        # While the service still runs: what it counted (the hashes the limits saved...).
        metrics = save_service_metrics(host, report_dir) if code == 0 else None
        if args.cross_check_wrk and code == 0:
            cross_check_with_wrk(host, env, report_dir, args.cross_check_wrk)
    if metrics is not None:
        since = "this run" if args.start_service else "since the service started"
        print(f"\nservice counters ({since}; all in {report_dir / 'service-metrics.txt'})")
        for line in summarize_service_metrics(metrics):
            print(f"  {line}")
    if code != 0:
        print(f"locust exited with {code}: the run is broken, gates not evaluated", file=sys.stderr)
        return EXIT_BROKEN
    print_steps(report_dir)
    results = evaluate_report(slo, report_dir / CSV_PREFIX)
    table = render(results)
    write_gates(report_dir, results, table)
    print(f"\nSLO gates ({args.slo}, [{slo.profile}])\n{table}\nreports: {report_dir}")
    return EXIT_PASSED if all(r.passed for r in results) else EXIT_GATE_FAILED


def command_gates(args: argparse.Namespace) -> int:
    slo = load_slo(args.profile, args.slo)
    results = evaluate_report(slo, Path(args.report_dir) / CSV_PREFIX)
    print(render(results))
    return EXIT_PASSED if all(r.passed for r in results) else EXIT_GATE_FAILED


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a profile headless and evaluate its SLO gates")
    run.add_argument(
        "--profile", required=True, help="a section of loadtests/profiles.toml: smoke, capacity, soak, stuffing"
    )
    target = run.add_mutually_exclusive_group()
    target.add_argument("--host", help="base URL of a running service, e.g. http://127.0.0.1:8000")
    target.add_argument(
        "--start-service", action="store_true", help="start PostgreSQL (or use LOADTEST_DATABASE_URL), seed, serve"
    )
    run.add_argument(
        "--workers", type=_non_negative, default=0, help="distributed: Locust master plus N worker processes"
    )
    run.add_argument("--run-time", help="override the profile's run_time (e.g. 10s)")
    run.add_argument("--users", type=int, help="override the profile's number of users")
    run.add_argument("--report-dir", help="where the reports go (default: loadtests/reports/<profile>-<time>)")
    run.add_argument("--profiles", type=Path, default=PROFILES_FILE, help=argparse.SUPPRESS)
    run.add_argument("--slo", type=Path, default=SLO_FILE, help="the SLO file (default: loadtests/slo.toml)")
    run.add_argument("--slo-profile", help="judge by another section of the SLO file than the profile's own")
    run.add_argument(
        "--cross-check-wrk",
        type=float,
        metavar="SECONDS",
        help="after a step load, log in with wrk (8 closed-loop connections) for SECONDS against the same "
        "service and compare its logins/s with the profile's highest (needs --start-service and wrk)",
    )
    run.set_defaults(handler=command_run)

    gates = commands.add_parser("gates", help="evaluate the SLO gates of an existing report")
    gates.add_argument("report_dir", help="a report directory written by `run`")
    gates.add_argument("--profile", required=True, help="the section of slo.toml to judge by")
    gates.add_argument("--slo", type=Path, default=SLO_FILE)
    gates.set_defaults(handler=command_gates)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (ProfileError, SloError, RuntimeError, subprocess.SubprocessError, OSError) as exc:
        # A broken profile, SLO file or service start-up (ServiceError is a RuntimeError):
        # one line that says what, not a traceback.
        print(f"loadtests: {exc}", file=sys.stderr)
        return EXIT_BROKEN
    return code
