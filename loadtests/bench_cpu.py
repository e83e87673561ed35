"""Who has the CPU: the two #15 figures the capacity benchmark reports but cannot explain.

    uv run python -m loadtests.bench_cpu workers [--seconds 8] [--rounds 3]
    uv run python -m loadtests.bench_cpu storm [--seconds 8] [--rounds 2]

- ``workers``: GET /users/me at 64 connections with one worker process and with two,
  interleaved over rounds, each a fresh service; the cores the service (with its worker
  processes), PostgreSQL, wrk and everything else used, and the service's CPU per request.
  On a machine whose cores wrk shares, two workers are bounded by the machine, not by the
  service, and this shows by how much.
- ``storm``: GET /users/me at 16 connections alone, then during a login storm of 8
  connections (the hashing pool saturated); the cores of the service's event loop and of
  its hashing threads (per thread, from /proc/<pid>/task), and PostgreSQL's.

Same service and database as loadtests.bench_capacity (throwaway PostgreSQL unless
BENCH_DATABASE_URL, WARNING logs, rate limits off, default argon2). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from app.settings import PasswordSettings
from loadtests.bench_capacity import LOGIN, ME, Service
from loadtests.bench_observability import database
from loadtests.wrk import WrkResult, parse_wrk, wrk_command

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(stat_path: Path) -> tuple[int, float, str] | None:
    """(parent pid, user + system CPU seconds, name) from a /proc stat file."""
    try:
        stat = stat_path.read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS, name


def cores_by_component(service_pid: int) -> dict[str, float]:
    """CPU seconds so far of the service's process tree, PostgreSQL's processes, wrk and the rest."""
    table: dict[int, tuple[int, float, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _cpu_seconds(Path("/proc", entry, "stat"))) is not None:
            table[int(entry)] = found
    family, grew = {service_pid}, True
    while grew:
        children = {pid for pid, (parent, _, _) in table.items() if parent in family} - family
        family |= children
        grew = bool(children)
    totals = {"service": 0.0, "postgres": 0.0, "wrk": 0.0, "other": 0.0}
    for pid, (_, seconds, name) in table.items():
        component = "service" if pid in family else name if name in {"postgres", "wrk"} else "other"
        totals[component] += seconds
    return totals


def threads_of(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread name; the main thread (the event loop) as "event loop"."""
    totals: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        if (found := _cpu_seconds(Path(f"/proc/{pid}/task/{tid}/stat"))) is not None:
            name = "event loop" if int(tid) == pid else f"thread {found[2]}"
            totals[name] = totals.get(name, 0.0) + found[1]
    return totals


def _per_second(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    return {key: (after[key] - before.get(key, 0.0)) / wall for key in after}


def me_window(service: Service, connections: int, seconds: float) -> tuple[WrkResult, float, float]:
    """wrk's result, the window's wall seconds and wrk's own CPU seconds (it has exited by
    the time /proc is read again, so its CPU comes from the children's resource usage)."""
    command = wrk_command(f"{service.base}{ME}", connections=connections, seconds=seconds, header=service.bearer)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return parse_wrk(out), wall, wrk_cpu


def workers(url: str, workdir: Path, seconds: float, rounds: int) -> None:
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for _ in range(rounds):
        for count in (1, 2):
            with Service(url, workdir, PasswordSettings(), workers=count).running() as service:
                me_window(service, 64, 2)  # every worker warm
                before = cores_by_component(service.pid)
                result, wall, wrk_cpu = me_window(service, 64, seconds)
                cores = _per_second(before, cores_by_component(service.pid), wall) | {"wrk": wrk_cpu / wall}
                runs[count].append({"rps": result.total / wall, **cores})
                print(f"  {count} worker(s): {result.total / wall:,.0f} req/s, cores {_shown(cores)}", flush=True)
    for count, found in runs.items():
        mean = {key: sum(run[key] for run in found) / len(found) for key in found[0]}
        print(
            f"{count} worker(s): {mean['rps']:,.0f} req/s; cores {_shown(mean, skip={'rps'})};"
            f" service CPU per request {1e6 * mean['service'] / mean['rps']:.0f} us",
        )
    two, one = (sum(run["rps"] for run in runs[n]) for n in (2, 1))
    print(f"two workers over one: {two / one:.2f}")


def storm(url: str, workdir: Path, seconds: float, rounds: int) -> None:
    with Service(url, workdir, PasswordSettings()).running() as service:
        me_window(service, 16, 2)
        for _ in range(rounds):
            for during_storm in (False, True):
                logins = None
                if during_storm:
                    command = wrk_command(
                        f"{service.base}{LOGIN}", connections=8, seconds=seconds + 3, script=service.login_script
                    )
                    logins = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                    time.sleep(1.5)  # the hashing pool saturated first
                threads_before, components_before = threads_of(service.pid), cores_by_component(service.pid)
                result, wall, wrk_cpu = me_window(service, 16, seconds)
                threads = _per_second(threads_before, threads_of(service.pid), wall)
                postgres = _per_second(components_before, cores_by_component(service.pid), wall)["postgres"]
                login_rate = parse_wrk(logins.communicate()[0]).ok_per_second if logins else 0.0
                print(
                    f"{'storm' if during_storm else 'quiet'}: /me {result.total / wall:,.0f} req/s,"
                    f" p50 {result.p50_ms:.1f} / p99 {result.p99_ms:.1f} ms; logins {login_rate:.1f}/s;"
                    f" cores {_shown({k: v for k, v in threads.items() if v >= 0.01})}, postgres {postgres:.2f},"
                    f" the /me wrk {wrk_cpu / wall:.2f}",
                    flush=True,
                )


def _shown(values: dict[str, float], skip: frozenset[str] | set[str] = frozenset()) -> str:
    return ", ".join(f"{key} {value:.2f}" for key, value in values.items() if key not in skip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=("workers", "storm"))
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=0, help="default: 3 for workers, 2 for storm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database() as url:
        if args.figure == "workers":
            workers(url, Path(tmp), args.seconds, args.rounds or 3)
        else:
            storm(url, Path(tmp), args.seconds, args.rounds or 2)


if __name__ == "__main__":
    main()
