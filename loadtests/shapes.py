"""Step load until saturation: the capacity profile's load shape.

Every ``LOADTEST_STEP_SECONDS`` the shape adds ``LOADTEST_STEP_USERS`` users, and at the end
of each step it measures that step alone (after ``LOADTEST_STEP_SETTLE_SECONDS`` of ramp):
throughput, the watched request's p50/p95/p99, the error and shed ratios. It stops at the
first step that crosses a limit (shed ratio, error ratio, or the watched request's p95) or
after the step at ``LOADTEST_STEP_MAX_USERS``, so every run is bounded. Each step is
appended to ``steps.csv`` in ``LOADTEST_REPORT_DIR``, and ``saturation.json`` names the
last step within the limits and why the run stopped.

Each step also records who used the machine (loadtests/machine.py): the load generator's,
the service's and every other process's CPU, the hashing pool's busy fraction and the mean
verify time. The stop says whether the service saturated (pool busy, shedding) or was
starved (a latency limit crossed with the pool idle), and a step where the generator or
other work took much of the machine carries a warning in words.

Only the master (or the single local process) runs the shape; it reads the runner's
aggregated statistics, so distributed runs are measured the same way.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field

from locust import LoadTestShape
from locust.stats import RequestStats, calculate_response_time_percentile, diff_response_time_dicts

from loadtests.machine import MachineSample, MachineStep, MachineWatch, verdict, warnings
from loadtests.scenarios.names import is_shed
from loadtests.step_plan import StepPlan

logger = logging.getLogger("loadtests.shape")


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    requests: int
    failures: int
    shed: int
    watched_ok: int
    watched_times: dict[int, int] = field(default_factory=dict)

    @classmethod
    def take(cls, stats: RequestStats, watch: str) -> Snapshot:
        method, _, name = watch.partition(" ")
        watched = stats.entries.get((name, method))  # dict.get: no empty entry is created
        return cls(
            at=time.monotonic(),
            requests=stats.total.num_requests,
            failures=stats.total.num_failures,
            shed=sum(e.num_requests for (n, _), e in stats.entries.items() if is_shed(n)),
            watched_ok=watched.num_requests - watched.num_failures if watched else 0,
            watched_times=dict(watched.response_times) if watched else {},
        )


@dataclass(frozen=True, slots=True)
class StepResult:
    step: int
    users: int
    offered_per_s: float | str  # a step load by rate: logins/s offered; "" otherwise
    seconds: float
    requests_per_s: float
    watched_ok_per_s: float
    watched_p50_ms: int
    watched_p95_ms: int
    watched_p99_ms: int
    error_ratio: float
    shed_ratio: float
    # Who used the machine (loadtests/machine.py), in cores; "" where it could not be read.
    generator_cpu: float | str
    service_cpu: float | str
    other_cpu: float | str
    pool_busy: float | str
    hashes_per_s: float | str
    verify_ms: float | str
    verify_on_core: float | str
    over_limit: str
    warnings: str

    @classmethod
    def between(
        cls,
        step: int,
        users: int,
        before: Snapshot,
        after: Snapshot,
        plan: StepPlan,
        machine: MachineStep | None = None,
    ) -> StepResult:
        seconds = max(after.at - before.at, 1e-9)
        requests = after.requests - before.requests
        times = diff_response_time_dicts(after.watched_times, before.watched_times)
        count = sum(times.values())

        def percentile(p: float) -> int:
            return int(calculate_response_time_percentile(times, count, p)) if count else 0

        error_ratio = (after.failures - before.failures) / requests if requests else 0.0
        shed_ratio = (after.shed - before.shed) / requests if requests else 0.0
        p95 = percentile(0.95)
        limits = [
            f"shed ratio {shed_ratio:.3f} > {plan.stop_shed_ratio}" if shed_ratio > plan.stop_shed_ratio else "",
            f"error ratio {error_ratio:.3f} > {plan.stop_error_ratio}" if error_ratio > plan.stop_error_ratio else "",
            f"{plan.watch} p95 {p95} ms > {plan.stop_p95_ms:g} ms" if p95 > plan.stop_p95_ms else "",
        ]
        return cls(
            step=step,
            users=users,
            offered_per_s=_or_blank(plan.offered_per_s(users)),
            seconds=round(seconds, 1),
            requests_per_s=round(requests / seconds, 1),
            watched_ok_per_s=round((after.watched_ok - before.watched_ok) / seconds, 1),
            watched_p50_ms=percentile(0.5),
            watched_p95_ms=p95,
            watched_p99_ms=percentile(0.99),
            error_ratio=round(error_ratio, 4),
            shed_ratio=round(shed_ratio, 4),
            generator_cpu=_or_blank(machine.generator_cores if machine else None),
            service_cpu=_or_blank(machine.service_cores if machine else None),
            other_cpu=_or_blank(machine.other_cores if machine else None),
            pool_busy=_or_blank(machine.pool_busy if machine else None),
            hashes_per_s=_or_blank(machine.hashes_per_s if machine else None),
            verify_ms=_or_blank(machine.verify_ms if machine else None),
            verify_on_core=_or_blank(machine.verify_on_core if machine else None),
            over_limit="; ".join(filter(None, limits)),
            warnings=" ".join(warnings(machine)) if machine else "",
        )


def _or_blank(value: float | None) -> float | str:
    return "" if value is None else value


class StepLoad(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # LoadTestShape.__init__ is unannotated
        self.plan = StepPlan.from_env()
        self.step = 0
        self.snapshot: Snapshot | None = None
        self.machine = MachineWatch.from_env()
        self.machine_snapshot: MachineSample | None = None
        self.machine_steps: list[MachineStep | None] = []
        self.results: list[StepResult] = []

    def tick(self) -> tuple[int, float] | None:
        plan = self.plan
        elapsed = self.get_run_time()  # type: ignore[no-untyped-call]  # unannotated in Locust
        step = int(elapsed // plan.step_seconds)
        if step != self.step:
            result = self._finish_step()
            if result.over_limit:
                why = verdict(self.machine_steps[-1], result.shed_ratio)
                self._summarise(f"step {result.step} ({result.users} users): {result.over_limit}", why)
                return None
            if plan.users(step) > plan.max_users:
                # Within every limit, yet the pool may have been saturated all the same (a
                # queue that had not grown past the latency limit in a short step).
                why = verdict(self.machine_steps[-1], result.shed_ratio, crossed=False)
                self._summarise(f"reached the maximum of {plan.max_users} users within the limits", why)
                return None
            self.step, self.snapshot = step, None
        if self.snapshot is None and elapsed - step * plan.step_seconds >= plan.settle_seconds:
            self.snapshot = Snapshot.take(self._stats(), plan.watch)
            self.machine_snapshot = self.machine.sample()
        return plan.users(step), plan.spawn_rate

    def _stats(self) -> RequestStats:
        if self.runner is None:
            raise RuntimeError("the shape runs only inside a Locust runner")
        return self.runner.stats

    def _finish_step(self) -> StepResult:
        now = Snapshot.take(self._stats(), self.plan.watch)
        machine = None
        if self.machine_snapshot is not None:
            machine = MachineStep.between(self.machine_snapshot, self.machine.sample())
        self.machine_steps.append(machine)
        self.machine_snapshot = None
        result = StepResult.between(
            self.step, self.plan.users(self.step), self.snapshot or now, now, self.plan, machine
        )
        self.results.append(result)
        logger.info("capacity step %s", asdict(result))
        if result.warnings:
            logger.warning("capacity step %s: %s", result.step, result.warnings)
        if self.plan.report_dir is not None:
            path = self.plan.report_dir / "steps.csv"
            new = not path.exists()
            with path.open("a", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=list(asdict(result)))
                if new:
                    writer.writeheader()
                writer.writerow(asdict(result))
        return result

    def _summarise(self, reason: str, why: str = "") -> None:
        within = [r for r in self.results if not r.over_limit]
        summary = {
            "stopped_because": reason,
            # Saturated (the service's capacity) or starved (the machine's), with the evidence.
            "verdict": why or "not saturated: the run ended within every limit",
            # The saturation point to compare with a closed-loop client's (wrk): the most
            # successful watched requests per second any step achieved, with its pool use.
            "peak_watched_ok_per_s": max((r.watched_ok_per_s for r in self.results), default=0.0),
            "peak_step": asdict(max(self.results, key=lambda r: r.watched_ok_per_s)) if self.results else None,
            # The hashing path's own saturation point, whatever the mix: the most jobs the
            # pool finished per second in any step (logins right and wrong, second factors,
            # sign-ups). A mixed profile's successful logins are only a share of it.
            "peak_hashes_per_s": max(
                (float(r.hashes_per_s) for r in self.results if r.hashes_per_s != ""), default=None
            ),
            "warnings": sorted({r.warnings for r in self.results if r.warnings}),
            "last_step_within_limits": asdict(within[-1]) if within else None,
            "limits": {
                "shed_ratio": self.plan.stop_shed_ratio,
                "error_ratio": self.plan.stop_error_ratio,
                "p95_ms": self.plan.stop_p95_ms,
                "watched": self.plan.watch,
            },
        }
        logger.info("capacity run stopped: %s", reason)
        if self.plan.report_dir is not None:
            (self.plan.report_dir / "saturation.json").write_text(json.dumps(summary, indent=2) + "\n")
