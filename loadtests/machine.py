"""Who used the machine during a capacity step, and how busy the hashing pool was.

A capacity figure is only the service's if the service had the machine: on a 2-core box the
load generator and any other work take CPU from the hashing threads, and a profile that
stops on its latency limit then reports the machine, not the service (issue 17 saw 2.5
logins/s reported for a pod that verifies 20/s). So each step of the capacity profile also
records:

- the load generator's CPU: the Locust processes (this one, and the workers the runner
  started, ``LOADTEST_GENERATOR_PIDS``), from psutil (which Locust itself depends on);
- the service's CPU: its processes (``LOADTEST_SERVICE_PIDS``, set when the runner started
  it) or else its own ``process_cpu_seconds_total``;
- every other process's CPU: the machine's busy time minus both;
- from the service's metrics (``LOADTEST_SERVICE_METRICS_URL``): the hashing pool's busy
  fraction (run time of hashes over workers x seconds), the mean verify time, the share of
  it the hashing threads spent on a core (their CPU time over their wall time: argon2 is
  CPU-bound, so the rest was waiting for a CPU), sheds.

``verdict`` says whether a step that crossed a limit was the service saturating or the
service starved, and ``warnings`` says, in words, when the figures are about the generator
or the machine rather than the service.
"""

from __future__ import annotations

import importlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

# The pool counts as saturated from here: with 2 workers, 85 % busy leaves a queue forming.
SATURATED_POOL_BUSY = 0.85
# argon2 is CPU-bound: a verify should spend nearly all its wall time on a core. Below this
# share, its thread was waiting for a CPU, not hashing (issue 17 saw 768 ms verifies of a
# 57 ms hash beside two spinning processes). On a quiet 2-core machine at saturation the
# share is about 0.86: the event loop and PostgreSQL take the rest.
CPU_STARVED_SHARE = 0.6
# A generator or other work taking this share of the machine makes the figures theirs.
GENERATOR_SHARE_WARNING = 0.35
OTHER_SHARE_WARNING = 0.25


@dataclass(frozen=True, slots=True)
class ServiceCounters:
    """The service's own counters at one moment (cumulative, as /metrics gives them)."""

    cpu_seconds: float | None = None
    hash_run_seconds: float = 0.0
    hash_workers: float = 0.0
    verify_seconds: float = 0.0
    verify_cpu_seconds: float | None = None
    verifies: float = 0.0
    # Every job the hashing pool finished: verifies (logins, right or wrong, second-factor
    # and password checks) and hashes (sign-ups, password changes).
    hash_jobs: float = 0.0
    sheds: float = 0.0


@dataclass(frozen=True, slots=True)
class MachineSample:
    at: float
    generator_cpu_seconds: float
    service_cpu_seconds: float | None
    machine_busy_seconds: float
    cores: int
    service: ServiceCounters | None


@dataclass(frozen=True, slots=True)
class MachineStep:
    """CPU in cores (1.0 = one core busy for the whole step) and the pool's use."""

    cores: int
    generator_cores: float
    service_cores: float | None
    other_cores: float | None
    pool_busy: float | None
    verify_ms: float | None
    hash_workers: float = 0.0
    # The share of the verifies' wall time their threads were on a core; None from a service
    # that does not count its hashing CPU.
    verify_on_core: float | None = None
    # Jobs the hashing pool finished per second: the hashing path's throughput whatever
    # the mix, to compare with a login-only client's logins/s.
    hashes_per_s: float | None = None

    @property
    def cpu_starved(self) -> bool:
        """The hashing threads were "busy" waiting for a CPU rather than hashing."""
        if self.verify_on_core is not None:
            return self.verify_on_core < CPU_STARVED_SHARE
        # Without the service's count: a pool busy N worker-seconds per second should burn
        # about N cores in the service.
        if self.pool_busy is None or self.service_cores is None or not self.hash_workers:
            return False
        return self.service_cores < CPU_STARVED_SHARE * self.pool_busy * self.hash_workers

    @classmethod
    def between(cls, before: MachineSample, after: MachineSample) -> MachineStep:
        seconds = max(after.at - before.at, 1e-9)
        generator = (after.generator_cpu_seconds - before.generator_cpu_seconds) / seconds
        machine = (after.machine_busy_seconds - before.machine_busy_seconds) / seconds
        service_cpu = _delta(before.service_cpu_seconds, after.service_cpu_seconds)
        pool_busy = verify_ms = on_core = hashes_per_s = None
        workers = 0.0
        if before.service is not None and after.service is not None:
            if service_cpu is None:
                service_cpu = _delta(before.service.cpu_seconds, after.service.cpu_seconds)
            workers = after.service.hash_workers
            if workers > 0:
                pool_busy = (after.service.hash_run_seconds - before.service.hash_run_seconds) / (workers * seconds)
            hashes_per_s = (after.service.hash_jobs - before.service.hash_jobs) / seconds
            verifies = after.service.verifies - before.service.verifies
            if verifies > 0:
                verify_seconds = after.service.verify_seconds - before.service.verify_seconds
                verify_ms = 1000 * verify_seconds / verifies
                verify_cpu = _delta(before.service.verify_cpu_seconds, after.service.verify_cpu_seconds)
                if verify_cpu is not None and verify_seconds > 0:
                    on_core = min(1.0, verify_cpu / verify_seconds)
        service = service_cpu / seconds if service_cpu is not None else None
        other = max(0.0, machine - generator - service) if service is not None else None
        return cls(
            cores=after.cores,
            generator_cores=round(generator, 2),
            service_cores=round(service, 2) if service is not None else None,
            other_cores=round(other, 2) if other is not None else None,
            pool_busy=round(pool_busy, 3) if pool_busy is not None else None,
            verify_ms=round(verify_ms, 1) if verify_ms is not None else None,
            hash_workers=workers,
            verify_on_core=round(on_core, 3) if on_core is not None else None,
            hashes_per_s=round(hashes_per_s, 1) if hashes_per_s is not None else None,
        )


def _delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


class MachineWatch:
    """Samples the machine at step boundaries; set up from the runner's environment."""

    def __init__(
        self,
        generator_pids: Iterable[int],
        service_pids: Iterable[int] = (),
        metrics_url: str | None = None,
    ) -> None:
        self.generator_pids = sorted({os.getpid(), *generator_pids})
        self.service_pids = sorted(set(service_pids))
        self.metrics_url = metrics_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MachineWatch:
        return cls(
            generator_pids=_pids(environ.get("LOADTEST_GENERATOR_PIDS", "")),
            service_pids=_pids(environ.get("LOADTEST_SERVICE_PIDS", "")),
            metrics_url=environ.get("LOADTEST_SERVICE_METRICS_URL") or None,
        )

    def sample(self) -> MachineSample:
        machine = psutil.cpu_times()
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        return MachineSample(
            at=time.monotonic(),
            generator_cpu_seconds=_cpu_seconds(self.generator_pids),
            service_cpu_seconds=_cpu_seconds(self.service_pids) if self.service_pids else None,
            machine_busy_seconds=sum(machine) - idle,
            cores=psutil.cpu_count() or 1,
            service=read_service_counters(self.metrics_url) if self.metrics_url else None,
        )


def _pids(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _cpu_seconds(pids: Iterable[int]) -> float:
    """User and system CPU of these processes and their children (a service's workers)."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in processes:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def read_service_counters(url: str) -> ServiceCounters | None:
    """The counters from the service's /metrics; None when it cannot be read (not exposed
    there, or prometheus-client missing in a Locust image without it)."""
    try:
        parser: Any = importlib.import_module("prometheus_client.parser")
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the runner's own URL  # nosec B310
            text = response.read().decode()
    except (ImportError, urllib.error.URLError, OSError, ValueError):
        return None
    values: dict[str, float] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            operation = sample.labels.get("operation")
            if sample.name == "process_cpu_seconds_total":
                values["cpu"] = values.get("cpu", 0.0) + sample.value
            elif sample.name == "user_service_password_hash_duration_seconds_sum":
                values["run"] = values.get("run", 0.0) + sample.value
                if operation == "verify":
                    values["verify_sum"] = sample.value
            elif sample.name == "user_service_password_hash_cpu_seconds_total" and operation == "verify":
                values["verify_cpu"] = sample.value
            elif sample.name == "user_service_password_hash_duration_seconds_count":
                values["jobs"] = values.get("jobs", 0.0) + sample.value
                if operation == "verify":
                    values["verifies"] = sample.value
            elif sample.name == "user_service_password_hash_workers":
                values["workers"] = sample.value
            elif sample.name == "user_service_password_hash_rejections_total":
                values["sheds"] = values.get("sheds", 0.0) + sample.value
    return ServiceCounters(
        cpu_seconds=values.get("cpu"),
        hash_run_seconds=values.get("run", 0.0),
        hash_workers=values.get("workers", 0.0),
        verify_seconds=values.get("verify_sum", 0.0),
        verify_cpu_seconds=values.get("verify_cpu"),
        verifies=values.get("verifies", 0.0),
        hash_jobs=values.get("jobs", 0.0),
        sheds=values.get("sheds", 0.0),
    )


def verdict(machine: MachineStep | None, shed_ratio: float, *, crossed: bool = True) -> str:
    """What the last step shows: the service saturated, or starved, or (``crossed`` false:
    the run ended within its limits) neither."""
    if machine is None or machine.pool_busy is None:
        return "unknown: the service's metrics were not readable (set LOADTEST_SERVICE_METRICS_URL)"
    busy = f"hashing pool busy {machine.pool_busy:.0%}"
    if machine.cpu_starved:
        if machine.verify_on_core is not None:
            evidence = f"verifies took {machine.verify_ms} ms{_on_core(machine)} ({_cpu_split(machine)})"
        else:
            evidence = (
                f"the service got only {machine.service_cores} cores for {machine.hash_workers:g} hashing threads "
                f"({_cpu_split(machine)}); verifies took {machine.verify_ms} ms"
            )
        return (
            f"starved of CPU, not saturated: the {busy} of the wall clock, but {evidence}. This is the machine's "
            "limit, not the service's capacity (the hashing threads run at nice +10, "
            "USER_SERVICE_PASSWORDS__THREAD_NICE, so outside a container they yield to every other process)"
        )
    if shed_ratio > 0 or machine.pool_busy >= SATURATED_POOL_BUSY:
        sheds = f", {shed_ratio:.1%} of requests shed" if shed_ratio > 0 else ""
        verifies = f", verifies {machine.verify_ms} ms{_on_core(machine)}" if machine.verify_ms is not None else ""
        return f"saturated: the service's capacity ({busy}{sheds}{verifies}, {_cpu_split(machine)})"
    if not crossed:
        return f"not saturated: the run ended within every limit ({busy}, {_cpu_split(machine)})"
    return (
        f"starved, not saturated: the limit was crossed with the {busy}, so the wait was elsewhere "
        f"({_cpu_split(machine)}); this is not the service's capacity"
    )


def warnings(machine: MachineStep) -> list[str]:
    """Sentences for the report when the figures are about something other than the service."""
    found = []
    if machine.generator_cores >= GENERATOR_SHARE_WARNING * machine.cores:
        found.append(
            f"the load generator used {machine.generator_cores:.2f} of {machine.cores} cores: the figures are "
            "partly about Locust. Run its workers on other cores or machines (--workers, or Locust's "
            "distributed mode), or use fewer users with no think time (the login storm needs only a handful)."
        )
    if machine.other_cores is not None and machine.other_cores >= OTHER_SHARE_WARNING * machine.cores:
        found.append(
            f"other processes used {machine.other_cores:.2f} of {machine.cores} cores: the service did not have "
            "the machine, so this step understates its capacity (its hashing threads, at nice +10, yield to "
            "them). Rerun on a quiet machine."
        )
    return found


def _cpu_split(machine: MachineStep) -> str:
    parts = [f"generator {machine.generator_cores:.2f}"]
    if machine.service_cores is not None:
        parts.append(f"service {machine.service_cores:.2f}")
    if machine.other_cores is not None:
        parts.append(f"other processes {machine.other_cores:.2f}")
    return ", ".join(parts) + f" of {machine.cores} cores"


def _on_core(machine: MachineStep) -> str:
    if machine.verify_on_core is None:
        return ""
    return f" of which {machine.verify_on_core:.0%} on a core (the rest waiting for a CPU)"
