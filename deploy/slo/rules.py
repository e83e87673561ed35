"""Prometheus recording rules and multi-window burn-rate alerts from the SLO spec.

For each SLO, one rule group (the rules of a group run in order, so its alerts read this
evaluation's ratios, not the previous one's, as rules in separate groups could):

- ``job:user_service_<stem>_events:rate5m`` and ``..._errors:rate5m``: 5-minute rates of
  all and of bad events. The budget panels sum these over 30 days (``sum_over_time`` of
  rates weighs every 5 minutes by its traffic, unlike an average of ratios), far cheaper
  than a 30-day range over raw series;
- ``job:user_service_<stem>_errors:ratio_rate<window>`` for every window a tier uses,
  each from the raw series (not averaged from the 5-minute ratio) so that busy and quiet
  minutes weigh by their traffic;
- one alert per burn-rate tier, all tiers of an SLO under one alert name and runbook
  section, told apart by the labels ``burn_rate``, ``long_window`` and ``short_window``
  (so Alertmanager can hold back the ticket while the page for the same SLO fires), each
  also requiring the SLO's ``x-min-bad-events`` bad events in its long window (the
  minimum-traffic guard: a single failed request on a quiet service is no burn).

A bad-event series exists only after its first bad event, so every error query is
followed by ``or 0 * <total>``: "no errors yet" is 0, not an empty result that would
silently disable the alerts and the budget panels.

``time_scale`` divides every window and ``for:`` duration (rule names and labels keep
the production windows), so that a test can run the real alert logic in seconds.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from deploy.alert_links import links
from deploy.slo.spec import PERIOD_DAYS, TIERS, WINDOW, WINDOWS, Slo, Spec, Tier, duration, seconds

RULES_NAME = "user-service-slo.rules.yml"

_WINDOW_WORDS = {"1h": "hour", "1d": "day"}
_UNIT_WORDS = {"m": "minutes", "h": "hours", "d": "days"}


def scaled(window: str, time_scale: float) -> str:
    """``window`` divided by ``time_scale``, rounded to whole seconds, at least one."""
    return duration(max(1, round(seconds(window) / time_scale)))


def _query(template: str, window: str, time_scale: float) -> str:
    return template.replace(WINDOW, scaled(window, time_scale))


def _errors_or_zero(slo: Slo, window: str, time_scale: float) -> str:
    return f"{_query(slo.error_query, window, time_scale)}\nor\n0 * {_query(slo.total_query, window, time_scale)}"


def _indented(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def recording_rules(slo: Slo, time_scale: float = 1) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"record": slo.rule("events", "5m"), "expr": _query(slo.total_query, "5m", time_scale) + "\n"},
        {"record": slo.rule("errors", "5m"), "expr": _errors_or_zero(slo, "5m", time_scale) + "\n"},
        {"record": slo.rule("ratio", "5m"), "expr": f"{slo.rule('errors', '5m')} / {slo.rule('events', '5m')}\n"},
    ]
    for window in WINDOWS:
        if window == "5m":
            continue
        errors = _indented(_errors_or_zero(slo, window, time_scale))
        ratio = f"(\n{errors}\n)\n/\n{_query(slo.total_query, window, time_scale)}\n"
        rules.append({"record": slo.rule("ratio", window), "expr": ratio})
    return rules


def window_words(window: str) -> str:
    """ "1h" -> "hour", "6h" -> "6 hours", "3d" -> "3 days"."""
    if window in _WINDOW_WORDS:
        return _WINDOW_WORDS[window]
    count, unit = window[:-1], window[-1]
    return f"{count} {_UNIT_WORDS[unit]}"


def percent(ratio: float) -> str:
    return f"{ratio * 100:g} %"


def tier_labels(slo: Slo, tier: Tier) -> dict[str, str]:
    return {
        **slo.labels_for(tier),
        "slo": slo.name,
        "burn_rate": tier.burn_label,
        "long_window": tier.long_window,
        "short_window": tier.short_window,
    }


def summary(slo: Slo, tier: Tier) -> str:
    return f"{slo.summary} at {tier.burn_label}x ({tier.long_window} and {tier.short_window} windows)"


def description(slo: Slo, tier: Tier, value: str = "{{ $value | humanizePercentage }}") -> str:
    days = tier.budget_days(PERIOD_DAYS)
    outlook = (
        f"At this rate the whole {PERIOD_DAYS}-day error budget will be spent."
        if days >= PERIOD_DAYS
        else f"At this rate the {PERIOD_DAYS}-day error budget is gone in about {days:.0f} days."
    )
    return (
        f"{value} {slo.bad_events} over the last {window_words(tier.long_window)}; "
        f"the SLO allows {percent(slo.budget)}. {outlook}"
    )


def alert(slo: Slo, tier: Tier, time_scale: float = 1) -> dict[str, Any]:
    threshold = f"({tier.burn_label} * {slo.budget:g})"
    long_window = scaled(tier.long_window, time_scale)
    # Bad events in the long window: their rate there times its length (scaled with it).
    bad_events = f"(\n{_indented(_query(slo.error_query, tier.long_window, time_scale))}\n) * {seconds(long_window)}"
    # A ratio above the threshold already means one bad event at least: the guard is
    # written only where it asks for more.
    guard = f"and\n{bad_events} >= {slo.min_bad_events}\n" if slo.min_bad_events > 1 else ""
    return {
        "alert": slo.alert_name,
        "expr": (
            f"{slo.rule('ratio', tier.long_window)} > {threshold}\n"
            f"and\n"
            f"{slo.rule('ratio', tier.short_window)} > {threshold}\n"
            f"{guard}"
        ),
        "for": scaled(tier.for_, time_scale),
        "labels": tier_labels(slo, tier),
        "annotations": {
            "summary": summary(slo, tier),
            "description": description(slo, tier),
            **asdict(links(slo.alert_name)),
        },
    }


def group(spec: Spec, slo: Slo, time_scale: float = 1) -> dict[str, Any]:
    return {
        "name": f"{spec.service}-slo-{slo.name}",
        "rules": [*recording_rules(slo, time_scale), *(alert(slo, tier, time_scale) for tier in TIERS)],
    }


def rule_groups(spec: Spec, time_scale: float = 1) -> list[dict[str, Any]]:
    return [group(spec, slo, time_scale) for slo in spec.slos]


def header(spec: Spec, time_scale: float = 1) -> str:
    lines = [
        "# Generated by `uv run python -m deploy.generate` from deploy/slo/slos.yml: do not edit.",
        "# SLO recording rules and multi-window, multi-burn-rate alerts (deploy/slo/rules.py says how).",
        "#",
        "#   SLO  objective  budget",
        *(f"#   {slo.name}  {slo.objective:g} %  {percent(slo.budget)}: {slo.description}" for slo in spec.slos),
        "#",
        "#   burn  long  short  budget spent when it fires  severity  for",
        *(
            f"#   {t.burn_label:<5} {t.long_window:<5} {t.short_window:<6} "
            f"{f'{t.burn * seconds(t.long_window) / (PERIOD_DAYS * 86400):.0%}':<28} {t.severity_kind:<9} {t.for_}"
            for t in TIERS
        ),
    ]
    if time_scale != 1:
        lines.append(
            f"#\n# TIME-SCALED for tests: every window and `for:` divided by {time_scale:g}. Not for production!"
        )
    return "\n".join(lines) + "\n"
