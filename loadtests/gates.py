"""SLO gates: limits from ``loadtests/slo.toml``, measurements from Locust's CSV report.

A profile's section in ``slo.toml`` holds

- ``error_ratio_max``: Locust failures / all requests (sheds are not failures);
- ``shed_ratio_max``: requests recorded as ``... [shed]`` / all requests;
- ``exceptions_max``: Python exceptions raised inside scenario code (a broken scenario);
- ``[<profile>.endpoints."METHOD name"]`` with ``p95_ms`` and/or ``p99_ms``, and
  ``min_requests`` (default 1): an endpoint with a limit but (almost) no traffic fails,
  because a gate that nothing exercised proves nothing.
- ``[<profile>.shares."METHOD name"]`` with ``of`` (a list of "METHOD name" keys, the
  gate's own among them), ``min`` and/or ``max`` (0..1), and ``min_requests`` (default
  1, of the whole group): the requests recorded under the name as a share of the
  group's. It says how requests ended where one endpoint's outcomes are recorded under
  several names: at least 20 % of an attack's logins refused by the rate limit
  (``min = 0.2``), none of them logged in (``max = 0``), few legitimate logins shed.

- ``objectives = ["<slo name>", ...]``: the Locust gates the service's SLOs imply, from
  ``loadtests/objectives.toml``, which ``uv run python -m deploy.generate`` renders from
  the one SLO source, ``deploy/slo/slos.yml``: a bound on failures plus sheds (the
  availability budget) and a percentile bound per endpoint (99 % of logins under 250 ms
  is a p99 of at most 250 ms), for profiles that stay within capacity.

Unknown keys and endpoint names that no scenario records are errors, not silently
ignored gates. Locust's percentiles are those of its CSV (``95%``, ``99%``): response-time
buckets rounded to two significant digits above 100 ms.
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.scenarios.names import ENDPOINTS, is_recorded, is_shed

SLO_FILE = Path(__file__).with_name("slo.toml")
OBJECTIVES_FILE = Path(__file__).with_name("objectives.toml")
AGGREGATED = "Aggregated"


class SloError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    p95_ms: float | None = None
    p99_ms: float | None = None
    min_requests: int = 1


@dataclass(frozen=True, slots=True)
class ShareLimits:
    of: tuple[str, ...]
    min_share: float | None = None
    max_share: float | None = None
    min_requests: int = 1


@dataclass(frozen=True, slots=True)
class Objective:
    """What one SLO of deploy/slo/slos.yml asks of a Locust run."""

    name: str
    error_and_shed_ratio_max: float | None = None
    percentile: float | None = None
    threshold_ms: float | None = None
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Slo:
    profile: str
    error_ratio_max: float
    shed_ratio_max: float
    exceptions_max: int = 0
    endpoints: dict[str, EndpointLimits] = field(default_factory=dict)
    shares: dict[str, ShareLimits] = field(default_factory=dict)
    objectives: tuple[Objective, ...] = ()


def _number(table: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> float | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SloError(f"{where}: {key} must be a number >= 0, not {value!r}")
    return float(value)


def parse_objectives(document: Mapping[str, Any]) -> dict[str, Objective]:
    objectives: dict[str, Objective] = {}
    for name, table in document.items():
        where = f"objectives.toml [{name}]"
        if unknown := set(table) - {
            "description",
            "error_and_shed_ratio_max",
            "percentile",
            "threshold_ms",
            "endpoints",
        }:
            raise SloError(f"{where}: unknown keys {sorted(unknown)}")
        endpoints = tuple(table.get("endpoints", ()))
        if strangers := [key for key in endpoints if key not in ENDPOINTS]:
            raise SloError(f"{where}: no scenario records {strangers}")
        percentile = _number(table, "percentile", where, required=False)
        if percentile not in (None, 95.0, 99.0):
            raise SloError(f"{where}: Locust's CSV gives the 95th and 99th percentiles, not {percentile}")
        objectives[name] = Objective(
            name=name,
            error_and_shed_ratio_max=_number(table, "error_and_shed_ratio_max", where, required=False),
            percentile=percentile,
            threshold_ms=_number(table, "threshold_ms", where, required=percentile is not None),
            endpoints=endpoints,
        )
    return objectives


def load_objectives(path: Path = OBJECTIVES_FILE) -> dict[str, Objective]:
    with path.open("rb") as source:
        return parse_objectives(tomllib.load(source))


def parse_slo(document: Mapping[str, Any], profile: str, objectives: Mapping[str, Objective] | None = None) -> Slo:
    if profile not in document:
        raise SloError(f"slo.toml has no [{profile}] section (it has: {', '.join(document) or 'none'})")
    section = document[profile]
    unknown = set(section) - {
        "error_ratio_max",
        "shed_ratio_max",
        "exceptions_max",
        "endpoints",
        "shares",
        "objectives",
    }
    if unknown:
        raise SloError(f"[{profile}]: unknown keys {sorted(unknown)}")
    endpoints: dict[str, EndpointLimits] = {}
    for name, limits in section.get("endpoints", {}).items():
        where = f'[{profile}.endpoints."{name}"]'
        if name not in ENDPOINTS:
            raise SloError(f"{where}: no scenario records this endpoint; known: {', '.join(sorted(ENDPOINTS))}")
        if unknown := set(limits) - {"p95_ms", "p99_ms", "min_requests"}:
            raise SloError(f"{where}: unknown keys {sorted(unknown)}")
        p95 = _number(limits, "p95_ms", where, required=False)
        p99 = _number(limits, "p99_ms", where, required=False)
        if p95 is None and p99 is None:
            raise SloError(f"{where}: needs p95_ms or p99_ms")
        minimum = _number(limits, "min_requests", where, required=False)
        endpoints[name] = EndpointLimits(p95_ms=p95, p99_ms=p99, min_requests=int(minimum or 1))
    return Slo(
        profile=profile,
        error_ratio_max=_number(section, "error_ratio_max", f"[{profile}]") or 0.0,
        shed_ratio_max=_number(section, "shed_ratio_max", f"[{profile}]") or 0.0,
        exceptions_max=int(_number(section, "exceptions_max", f"[{profile}]", required=False) or 0),
        endpoints=endpoints,
        shares={name: _parse_share(profile, name, limits) for name, limits in section.get("shares", {}).items()},
        objectives=_chosen_objectives(profile, section.get("objectives", []), objectives),
    )


def _chosen_objectives(profile: str, names: Any, known: Mapping[str, Objective] | None) -> tuple[Objective, ...]:
    if names == []:
        return ()
    known = load_objectives() if known is None else known
    if not isinstance(names, list) or any(name not in known for name in names):
        raise SloError(f"[{profile}].objectives: {names!r} is not a list of SLO names of objectives.toml")
    return tuple(known[name] for name in names)


def _parse_share(profile: str, name: str, limits: Mapping[str, Any]) -> ShareLimits:
    where = f'[{profile}.shares."{name}"]'
    if unknown := set(limits) - {"of", "min", "max", "min_requests"}:
        raise SloError(f"{where}: unknown keys {sorted(unknown)}")
    group = limits.get("of")
    if not isinstance(group, list) or not all(isinstance(key, str) for key in group) or name not in group:
        raise SloError(f"{where}: of must be a list of request names that includes {name!r}")
    if strangers := [key for key in group if not is_recorded(key)]:
        raise SloError(f"{where}: no scenario records {strangers}; known: {', '.join(sorted(ENDPOINTS))}")
    low = _number(limits, "min", where, required=False)
    high = _number(limits, "max", where, required=False)
    if low is None and high is None:
        raise SloError(f"{where}: needs min or max")
    if not 0 <= (low or 0) <= (1 if high is None else high) <= 1:
        raise SloError(f"{where}: min and max are shares, 0 <= min <= max <= 1")
    minimum = _number(limits, "min_requests", where, required=False)
    return ShareLimits(of=tuple(group), min_share=low, max_share=high, min_requests=int(minimum or 1))


def load_slo(profile: str, path: Path = SLO_FILE) -> Slo:
    with path.open("rb") as source:
        return parse_slo(tomllib.load(source), profile)


@dataclass(frozen=True, slots=True)
class StatsRow:
    key: str  # "METHOD name", or "Aggregated"
    requests: int
    failures: int
    p95_ms: float | None
    p99_ms: float | None


def _percentile(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:  # "N/A" when there were no requests
        return None
    return None if math.isnan(number) else number


def read_stats(stats_csv: Path) -> dict[str, StatsRow]:
    """Locust's ``<prefix>_stats.csv`` as rows keyed "METHOD name" (and "Aggregated")."""
    rows: dict[str, StatsRow] = {}
    with stats_csv.open(newline="") as source:
        for record in csv.DictReader(source):
            key = record["Name"] if record["Name"] == AGGREGATED else f"{record['Type']} {record['Name']}"
            rows[key] = StatsRow(
                key=key,
                requests=int(record["Request Count"]),
                failures=int(record["Failure Count"]),
                p95_ms=_percentile(record["95%"]),
                p99_ms=_percentile(record["99%"]),
            )
    return rows


def count_exceptions(exceptions_csv: Path) -> int:
    if not exceptions_csv.exists():
        return 0
    with exceptions_csv.open(newline="") as source:
        return sum(int(record["Count"]) for record in csv.DictReader(source))


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    limit: str
    measured: str
    passed: bool


def _ratio_gate(name: str, part: int, whole: int, limit: float) -> GateResult:
    ratio = part / whole if whole else 0.0
    return GateResult(name, f"<= {limit:.2%}", f"{ratio:.2%} ({part}/{whole})", ratio <= limit)


def evaluate(slo: Slo, rows: Mapping[str, StatsRow], exceptions: int = 0) -> list[GateResult]:
    total = rows.get(AGGREGATED)
    if total is None or total.requests == 0:
        return [GateResult("requests", "> 0", "0", passed=False)]
    shed = sum(row.requests for key, row in rows.items() if key != AGGREGATED and is_shed(key))
    results = [
        _ratio_gate("error ratio", total.failures, total.requests, slo.error_ratio_max),
        _ratio_gate("shed ratio", shed, total.requests, slo.shed_ratio_max),
        GateResult(
            "scenario exceptions", f"<= {slo.exceptions_max}", str(exceptions), exceptions <= slo.exceptions_max
        ),
    ]
    for name, limits in slo.endpoints.items():
        row = rows.get(name)
        if row is None or row.requests < limits.min_requests:
            count = str(row.requests if row else 0)
            results.append(GateResult(f"{name} requests", f">= {limits.min_requests}", count, passed=False))
            continue
        count = str(row.requests)
        for label, limit, measured in (("p95", limits.p95_ms, row.p95_ms), ("p99", limits.p99_ms, row.p99_ms)):
            if limit is None:
                continue
            passed = measured is not None and measured <= limit
            shown = "n/a" if measured is None else f"{measured:g} ms"
            results.append(GateResult(f"{name} {label}", f"<= {limit:g} ms", f"{shown} (n={count})", passed))
    results += [_share_gate(name, limits, rows) for name, limits in slo.shares.items()]
    for objective in slo.objectives:
        results += _objective_gates(objective, rows, total, shed)
    return results


def _objective_gates(
    objective: Objective, rows: Mapping[str, StatsRow], total: StatsRow, shed: int
) -> list[GateResult]:
    results: list[GateResult] = []
    if objective.error_and_shed_ratio_max is not None:
        part = total.failures + shed
        results.append(
            _ratio_gate(
                f"SLO {objective.name}: failures + sheds", part, total.requests, objective.error_and_shed_ratio_max
            )
        )
    if objective.percentile is not None and objective.threshold_ms is not None:
        measured = [rows[name] for name in objective.endpoints if name in rows and rows[name].requests > 0]
        if not measured:
            gate = f"SLO {objective.name} requests"
            results.append(GateResult(gate, f"> 0 of {', '.join(objective.endpoints)}", "0", passed=False))
        label = f"p{objective.percentile:g}"
        for row in measured:
            value = row.p95_ms if objective.percentile == 95.0 else row.p99_ms
            shown = "n/a" if value is None else f"{value:g} ms"
            passed = value is not None and value <= objective.threshold_ms
            gate = f"SLO {objective.name}: {row.key} {label}"
            results.append(GateResult(gate, f"<= {objective.threshold_ms:g} ms", f"{shown} (n={row.requests})", passed))
    return results


def _share_gate(name: str, limits: ShareLimits, rows: Mapping[str, StatsRow]) -> GateResult:
    def requests(key: str) -> int:
        row = rows.get(key)
        return row.requests if row else 0

    group = sum(requests(key) for key in limits.of)
    if group < limits.min_requests:
        return GateResult(f"{name} share", f"group >= {limits.min_requests} requests", str(group), passed=False)
    part = requests(name)
    share = part / group
    bounds = []
    if limits.min_share is not None:
        bounds.append(f">= {limits.min_share:.2%}")
    if limits.max_share is not None:
        bounds.append(f"<= {limits.max_share:.2%}")
    passed = (limits.min_share is None or share >= limits.min_share) and (
        limits.max_share is None or share <= limits.max_share
    )
    return GateResult(f"{name} share", ", ".join(bounds), f"{share:.2%} ({part}/{group})", passed)


def evaluate_report(slo: Slo, csv_prefix: Path) -> list[GateResult]:
    """Gates for the report Locust wrote with ``--csv <csv_prefix>``."""
    stats = csv_prefix.with_name(csv_prefix.name + "_stats.csv")
    if not stats.exists():
        return [GateResult("Locust CSV report", "present", f"{stats} missing", passed=False)]
    exceptions = count_exceptions(csv_prefix.with_name(csv_prefix.name + "_exceptions.csv"))
    return evaluate(slo, read_stats(stats), exceptions)


def render(results: list[GateResult]) -> str:
    header = ("gate", "limit", "measured", "result")
    table = [header, *((r.gate, r.limit, r.measured, "PASS" if r.passed else "FAIL") for r in results)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    failed = sum(not r.passed for r in results)
    lines.append(f"\n{len(results) - failed} of {len(results)} gates passed" + (f", {failed} FAILED" if failed else ""))
    return "\n".join(lines)
