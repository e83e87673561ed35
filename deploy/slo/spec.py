"""The SLO spec (deploy/slo/slos.yml, Sloth's ``prometheus/v1`` format) as typed values,
and the burn-rate tiers every SLO of it shares.

Only the parts of Sloth's format this project uses are accepted; anything else is an
error rather than a silently ignored key, so a field copied from Sloth's documentation
that the generator does not implement (``sli.raw``, ``sli.plugin``, ``disable``) cannot
look as if it worked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SPEC_FILE = Path(__file__).with_name("slos.yml")
WINDOW = "{{.window}}"

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    """Seconds in a Prometheus duration of one unit ("5m", "3d")."""
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"not a one-unit Prometheus duration: {duration!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def duration(total_seconds: float) -> str:
    """The shortest one-unit Prometheus duration for a whole number of seconds."""
    whole = round(total_seconds)
    if whole < 1 or abs(whole - total_seconds) > 1e-9:
        raise ValueError(f"{total_seconds} s is not a whole number of seconds of at least one")
    for unit in ("d", "h", "m"):
        if whole % _UNIT_SECONDS[unit] == 0:
            return f"{whole // _UNIT_SECONDS[unit]}{unit}"
    return f"{whole}s"


@dataclass(frozen=True, slots=True)
class Tier:
    """One multi-window burn-rate alert: both windows above ``burn`` times the budget."""

    burn: float
    long_window: str
    short_window: str
    for_: str
    severity_kind: str  # "page" or "ticket": which of the spec's alert blocks labels it

    @property
    def burn_label(self) -> str:
        return f"{self.burn:g}"

    def budget_days(self, period_days: int) -> float:
        return period_days / self.burn


# Google SRE workbook, "Alerting on SLOs", and Sloth's defaults: a burn rate of N spends a
# 30-day budget in 30/N days. The long window proves the burn is significant, the short
# one (1/12 of it) that it is still going on, so the alert resolves minutes after a
# recovery instead of hours. The "for" clauses ignore a single bad evaluation and scale
# with the windows, as in Pyrra's generated rules.
TIERS = (
    Tier(14.4, "1h", "5m", "2m", "page"),
    Tier(6, "6h", "30m", "15m", "page"),
    Tier(3, "1d", "2h", "1h", "ticket"),
    Tier(1, "3d", "6h", "3h", "ticket"),
)
PERIOD_DAYS = 30
# Every window a recording rule is kept for: the tiers' and the dashboards' 5m.
WINDOWS = tuple(sorted({w for t in TIERS for w in (t.long_window, t.short_window)}, key=seconds))


@dataclass(frozen=True, slots=True)
class LoadtestObjective:
    error_and_shed_ratio_max: bool
    percentile_of: tuple[str, ...]
    threshold_ms: float | None


@dataclass(frozen=True, slots=True)
class Slo:
    name: str
    objective: float  # percent, as Sloth writes it
    description: str
    error_query: str
    total_query: str
    alert_name: str
    summary: str
    page_labels: dict[str, str]
    ticket_labels: dict[str, str]
    record: str
    bad_events: str
    good_series: tuple[str, ...]
    bad_series: tuple[str, ...]
    loadtest: LoadtestObjective
    # The minimum-traffic guard (x-min-bad-events): a tier fires only with at least this
    # many bad events in its long window.
    min_bad_events: int = 1

    @property
    def budget(self) -> float:
        """The error budget as a ratio: 0.001 for 99.9 %."""
        return round(1 - self.objective / 100, 10)

    def labels_for(self, tier: Tier) -> dict[str, str]:
        return dict(self.page_labels if tier.severity_kind == "page" else self.ticket_labels)

    def rule(self, kind: str, window: str) -> str:
        """Name of a recording rule: kind "errors"/"events" (5m rates) or "ratio"."""
        prefix = "job:user_service_"
        if kind == "ratio":
            return f"{prefix}{self.record}_errors:ratio_rate{window}"
        return f"{prefix}{self.record}_{kind}:rate{window}"


@dataclass(frozen=True, slots=True)
class Spec:
    service: str
    slos: tuple[Slo, ...]

    def by_name(self, name: str) -> Slo:
        for slo in self.slos:
            if slo.name == name:
                return slo
        raise KeyError(name)


class SpecError(ValueError):
    pass


def _take(mapping: Any, where: str, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> None:
    if not isinstance(mapping, dict):
        raise SpecError(f"{where}: expected a mapping")
    missing = required - mapping.keys()
    unknown = mapping.keys() - required - optional
    if missing:
        raise SpecError(f"{where}: missing {sorted(missing)}")
    if unknown:
        raise SpecError(f"{where}: keys this generator does not implement: {sorted(unknown)}")


def _labels(block: dict[str, Any], where: str) -> dict[str, str]:
    _take(block, where, {"labels"})
    labels = block["labels"]
    if not isinstance(labels, dict) or "severity" not in labels:
        raise SpecError(f"{where}.labels: a severity label is required (the routes match on it)")
    return {str(k): str(v) for k, v in labels.items()}


def _slo(raw: dict[str, Any], index: int) -> Slo:
    where = f"slos[{index}]"
    _take(
        raw,
        where,
        {"name", "objective", "description", "sli", "alerting", "x-record", "x-bad-events", "x-promtool-series"},
        {"x-loadtest", "x-min-bad-events"},
    )
    _take(raw["sli"], f"{where}.sli", {"events"})
    events = raw["sli"]["events"]
    _take(events, f"{where}.sli.events", {"error_query", "total_query"})
    for key in ("error_query", "total_query"):
        if WINDOW not in events[key]:
            raise SpecError(f"{where}.sli.events.{key}: no {WINDOW} placeholder")
    alerting = raw["alerting"]
    _take(alerting, f"{where}.alerting", {"name", "annotations", "page_alert", "ticket_alert"})
    _take(alerting["annotations"], f"{where}.alerting.annotations", {"summary"})
    series = raw["x-promtool-series"]
    _take(series, f"{where}.x-promtool-series", {"good", "bad"})
    loadtest = raw.get("x-loadtest") or {}
    _take(loadtest, f"{where}.x-loadtest", set(), {"error_and_shed_ratio_max", "percentile_of", "threshold_ms"})
    threshold_ms = loadtest.get("threshold_ms")
    if threshold_ms is not None and f'le="{float(threshold_ms) / 1000:g}"' not in events["error_query"]:
        # The dashboards and the Locust gate read the threshold from here, the alerts from the
        # query's bucket: they must be one number.
        raise SpecError(f'{where}: x-loadtest.threshold_ms {threshold_ms} is not the le="..." of the error query')
    objective = float(raw["objective"])
    budget = 1 - objective / 100
    if not 0 < budget * TIERS[0].burn < 1:
        raise SpecError(f"{where}: objective {objective} leaves a budget the {TIERS[0].burn}x tier cannot burn")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", raw["x-record"]):
        raise SpecError(f"{where}.x-record: lower-case letters, digits and _ only")
    return Slo(
        name=str(raw["name"]),
        objective=objective,
        description=str(raw["description"]),
        error_query=str(events["error_query"]).strip(),
        total_query=str(events["total_query"]).strip(),
        alert_name=str(alerting["name"]),
        summary=str(alerting["annotations"]["summary"]),
        page_labels=_labels(alerting["page_alert"], f"{where}.alerting.page_alert"),
        ticket_labels=_labels(alerting["ticket_alert"], f"{where}.alerting.ticket_alert"),
        record=str(raw["x-record"]),
        bad_events=str(raw["x-bad-events"]),
        good_series=tuple(series["good"]),
        bad_series=tuple(series["bad"]),
        loadtest=LoadtestObjective(
            error_and_shed_ratio_max=bool(loadtest.get("error_and_shed_ratio_max", False)),
            percentile_of=tuple(loadtest.get("percentile_of", ())),
            threshold_ms=float(loadtest["threshold_ms"]) if "threshold_ms" in loadtest else None,
        ),
        min_bad_events=_positive_int(raw.get("x-min-bad-events", 1), f"{where}.x-min-bad-events"),
    )


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{where}: a whole number of at least 1, not {value!r}")
    return value


def load(path: Path = SPEC_FILE) -> Spec:
    raw = yaml.safe_load(path.read_text())
    _take(raw, str(path), {"version", "service", "slos"})
    if raw["version"] != "prometheus/v1":
        raise SpecError(f"{path}: version {raw['version']!r}, expected Sloth's 'prometheus/v1'")
    slos = tuple(_slo(item, i) for i, item in enumerate(raw["slos"]))
    names = [slo.name for slo in slos]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: SLO names repeat: {names}")
    return Spec(service=str(raw["service"]), slos=slos)
