"""promtool unit tests of the generated SLO rules, for every SLO of the spec.

Traffic is built from the spec's ``x-promtool-series`` (the series one good and one bad
event increment), as counters sampled once a minute, at a chosen error ratio. Per SLO:

- each tier fires at 1.5 times its threshold, ten minutes after its ``for:`` has run out,
  while no faster tier does (1.5 times a tier's burn stays under the next tier's);
- each tier stays silent at 0.8 times its threshold over the same time;
- each tier stays silent when a burst fills its short window but not its long one;
- a burst followed by clean traffic: the fastest page still fires two minutes after it and
  has resolved one short window later, while the 6x page holds (the point of the
  multi-window design);
- no bad event at all: every ratio is 0, not an empty result.

Expected annotations are computed from the same functions that write the rules, with
the value formatted as Prometheus's ``humanizePercentage`` does (``%.4g`` of the percent).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from deploy.alert_links import links
from deploy.slo.rules import RULES_NAME, description, summary, tier_labels
from deploy.slo.spec import TIERS, WINDOWS, Slo, Spec, Tier, seconds

TESTS_NAME = "slo-burn-rates.test.yml"
SPARSE_TESTS_NAME = "slo-burn-rates-long-windows.test.yml"
EVENTS_PER_MINUTE = 100_000
_MARGIN_MINUTES = 10
_SPARSE_STEP_MINUTES = 5


def _minutes(duration: str) -> int:
    return seconds(duration) // 60


def humanize_percentage(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"


def _bad_per_minute(ratio: float) -> int:
    return round(ratio * EVENTS_PER_MINUTE)


def series(slo: Slo, phases: Sequence[tuple[int, float]], *, step_minutes: int = 1) -> list[dict[str, str]]:
    """Input series for consecutive phases of (minutes, error ratio), one sample every
    ``step_minutes`` (each phase a whole number of steps)."""
    increments: dict[str, list[tuple[int, int]]] = defaultdict(list)
    names = dict.fromkeys([*slo.good_series, *slo.bad_series])
    for minutes, ratio in phases:
        if minutes % step_minutes:
            raise ValueError(f"a phase of {minutes}m is not a whole number of {step_minutes}m steps")
        steps = minutes // step_minutes
        bad = _bad_per_minute(ratio)
        per_series: dict[str, int] = dict.fromkeys(names, 0)
        for name in slo.good_series:
            per_series[name] += EVENTS_PER_MINUTE - bad
        for name in slo.bad_series:
            per_series[name] += bad
        for name, step in per_series.items():
            increments[name].append((steps, step))
    return [{"series": name, "values": _values(steps)} for name, steps in increments.items()]


def _values(phases: list[tuple[int, int]]) -> str:
    """promtool's expanding notation: "0+5x10" is 0, 5, ..., 50 (11 samples); a later
    phase starts one step after the previous one's last sample."""
    parts: list[str] = []
    last = 0
    for index, (samples, step) in enumerate(phases):
        if index == 0:
            parts.append(f"0+{step}x{samples}")
            last = step * samples
        else:
            start = last + step
            parts.append(f"{start}+{step}x{samples - 1}")
            last = start + step * (samples - 1)
    return " ".join(parts)


def expected_alert(slo: Slo, tier: Tier, ratio: float) -> dict[str, Any]:
    return {
        "exp_labels": {**tier_labels(slo, tier), "job": "user-service"},
        "exp_annotations": {
            "summary": summary(slo, tier),
            "description": description(slo, tier, humanize_percentage(ratio)),
            **asdict(links(slo.alert_name)),
        },
    }


def _fires(slo: Slo, tier: Tier) -> dict[str, Any]:
    ratio = _bad_per_minute(1.5 * tier.burn * slo.budget) / EVENTS_PER_MINUTE
    at = _minutes(tier.for_) + _MARGIN_MINUTES
    return {
        "name": f"{slo.name}: {tier.burn_label}x burn ({ratio:.4%} bad) fires after its for: of {tier.for_}",
        "interval": "1m",
        "input_series": series(slo, [(at + 1, ratio)]),
        "alert_rule_test": [
            {"eval_time": f"{at}m", "alertname": slo.alert_name, "exp_alerts": [expected_alert(slo, tier, ratio)]}
        ],
    }


def _silent(slo: Slo, tier: Tier) -> dict[str, Any]:
    ratio = _bad_per_minute(0.8 * tier.burn * slo.budget) / EVENTS_PER_MINUTE
    at = _minutes(tier.for_) + _MARGIN_MINUTES
    return {
        "name": f"{slo.name}: {ratio:.4%} bad, under the {tier.burn_label}x threshold, fires nothing by {at}m",
        "interval": "1m",
        "input_series": series(slo, [(at + 1, ratio)]),
        "alert_rule_test": [{"eval_time": f"{at}m", "alertname": slo.alert_name, "exp_alerts": []}],
    }


def _long_window_guards(slo: Slo, tier: Tier) -> dict[str, Any]:
    """A burst that fills the short window (and outlasts the ``for:``) after a long window of
    clean traffic: the short window alone is over the threshold, the long one is not, so the
    tier stays silent. A tier reading the wrong long window, or a recording rule with the
    wrong range, fires here."""
    ratio = _bad_per_minute(1.5 * tier.burn * slo.budget) / EVENTS_PER_MINUTE
    long, burst = _minutes(tier.long_window), _minutes(tier.short_window) + _minutes(tier.for_) + _MARGIN_MINUTES
    if 1.5 * burst >= long:
        raise ValueError(f"{tier}: a burst of {burst}m would lift the long window over the threshold")
    step = _SPARSE_STEP_MINUTES if sparse(tier) else 1
    return {
        "name": (
            f"{slo.name}: {burst}m of {ratio:.4%} bad after {tier.long_window} of clean traffic: over the "
            f"{tier.burn_label}x threshold in its {tier.short_window} window only, so it stays silent"
        ),
        "interval": f"{step}m",
        "input_series": series(slo, [(long, 0.0), (burst, ratio)], step_minutes=step),
        "alert_rule_test": [{"eval_time": f"{long + burst}m", "alertname": slo.alert_name, "exp_alerts": []}],
    }


def sparse(tier: Tier) -> bool:
    """Whether a tier's long-window guard runs in the sparse file: a day or three of samples,
    evaluated every minute over every SLO's rules, was most of promtool's time. Where the
    tier's short window holds six 5-minute samples or more, one sample and one evaluation
    per 5 minutes decide the same (the ratios, not the rates, are compared) at a fifth of
    the cost. The 5-minute windows are empty there, which only the 14.4x tier reads."""
    return _minutes(tier.short_window) >= 6 * _SPARSE_STEP_MINUTES


def _burst_then_recovery(slo: Slo) -> dict[str, Any]:
    fast, six = TIERS[0], TIERS[1]
    ratio = min(1.0, 100 * slo.budget)
    burst, total = 30, 50
    return {
        "name": (
            f"{slo.name}: a {ratio:.0%} burst for {burst}m, then clean traffic: the {fast.burn_label}x page "
            f"resolves one {fast.short_window} window after it while the {six.burn_label}x page holds"
        ),
        "interval": "1m",
        "input_series": series(slo, [(burst + 1, ratio), (total - burst, 0.0)]),
        "alert_rule_test": [
            {
                "eval_time": "25m",
                "alertname": slo.alert_name,
                "exp_alerts": [expected_alert(slo, fast, ratio), expected_alert(slo, six, ratio)],
            },
            # Two minutes after the burst its 5m window is still mostly bad: both pages hold
            # (the long windows hold the burst's minutes out of 33).
            {
                "eval_time": f"{burst + 3}m",
                "alertname": slo.alert_name,
                "exp_alerts": [
                    expected_alert(slo, fast, ratio * (burst + 1) / (burst + 3)),
                    expected_alert(slo, six, ratio * (burst + 1) / (burst + 3)),
                ],
            },
            # One short window later it is clean: the fast page has resolved, the 6x holds.
            {
                "eval_time": f"{burst + 8}m",
                "alertname": slo.alert_name,
                "exp_alerts": [expected_alert(slo, six, ratio * (burst + 1) / (burst + 8))],
            },
        ],
    }


def _zero_not_empty(slo: Slo) -> dict[str, Any]:
    return {
        "name": f"{slo.name}: no bad event yet gives a zero ratio in every window, not an empty one",
        "interval": "1m",
        "input_series": [{"series": name, "values": f"0+{EVENTS_PER_MINUTE}x30"} for name in slo.good_series],
        "promql_expr_test": [
            {
                "expr": slo.rule("ratio", window),
                "eval_time": "10m",
                "exp_samples": [{"labels": f'{slo.rule("ratio", window)}{{job="user-service"}}', "value": 0}],
            }
            for window in WINDOWS
        ],
    }


def document(spec: Spec) -> dict[str, Any]:
    tests: list[dict[str, Any]] = []
    for slo in spec.slos:
        for tier in TIERS:
            tests += [_fires(slo, tier), _silent(slo, tier)]
            if not sparse(tier):
                tests.append(_long_window_guards(slo, tier))
        tests += [_burst_then_recovery(slo), _zero_not_empty(slo)]
    return {"rule_files": [f"../rules/{RULES_NAME}"], "evaluation_interval": "1m", "tests": tests}


def sparse_document(spec: Spec) -> dict[str, Any]:
    """The long-window guards of the tiers ``sparse`` names, evaluated every 5 minutes."""
    tests = [_long_window_guards(slo, tier) for slo in spec.slos for tier in TIERS if sparse(tier)]
    return {
        "rule_files": [f"../rules/{RULES_NAME}"],
        "evaluation_interval": f"{_SPARSE_STEP_MINUTES}m",
        "tests": tests,
    }


HEADER = (
    "# Generated by `uv run python -m deploy.generate` from deploy/slo/slos.yml: do not edit.\n"
    "# promtool unit tests of every SLO's burn-rate tiers (deploy/slo/rule_tests.py says which).\n"
    "# Run: promtool test rules deploy/prometheus/tests/*.yml\n"
)
