"""Every Prometheus rule of the service with time scaled down, for tests that run the real
alert logic in seconds:

    uv run python -m deploy.slo.scaled --time-scale 60 --out DIR

writes DIR/user-service-slo.rules.yml (rendered from the spec with every window and
``for:`` divided by the scale), DIR/user-service.rules.yml and
DIR/user-service-probes.rules.yml (the hand-written alerts with every range selector,
subquery, ``offset`` and ``for:`` divided the same way).
Rule names and labels keep their production windows, so routes, inhibitions and
dashboards work on the scaled rules unchanged. A duration that would fall under one
second becomes one second, and a range selector's window is at least ``MIN_RANGE``
(production's shortest window, 2m, holds eight scrapes at 15 s; scaled to 2 s at the
tests' 1 s interval it would hold one or two, and one late scrape under load empties it,
which resets every ``for:`` built on it). A range this cannot scale (``1h30m``,
``500ms``) is an error.
A threshold that is a time in seconds is scaled only where a PromQL comment marks it
(``> 600  # seconds``); other numbers are values and stay. So a rate threshold keeps its
meaning, but a count over a window does not: ``increase(x[15m]) > 10`` becomes ten events
in 15 s, 60 times less sensitive (the refresh-token reuse and readiness-flapping alerts),
which the fault tests do not rely on.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.slo.generate import ROOT, rules_text
from deploy.slo.rules import RULES_NAME, scaled
from deploy.slo.spec import duration, seconds
from deploy.yaml_text import to_yaml_document

# The hand-written rules: the cause alerts, and the outside-in probe's.
CAUSE_RULES_FILES = (
    ROOT / "deploy" / "prometheus" / "rules" / "user-service.rules.yml",
    ROOT / "deploy" / "prometheus" / "rules" / "user-service-probes.rules.yml",
)

_RANGE = re.compile(r"\[(\d+[smhd])(?::(\d+[smhd])?)?\]")
# Any range or subquery at all: what _RANGE cannot scale (1h30m, 500ms, 1w) is an error,
# not a window silently left at production length.
_ANY_RANGE = re.compile(r"\[[^\]]*\d[^\]]*\]")
# Four scrapes at the time-scaled tests' 1 s interval (tests/deploy/alert_stack.py).
MIN_RANGE = "4s"
_OFFSET = re.compile(r"\boffset\s+(\d+[smhd])\b")
# A threshold that is a time in seconds (an age), marked so by a PromQL comment.
_SECONDS_VALUE = re.compile(r"(\d+(?:\.\d+)?)(\s*#\s*seconds\b)")


def scale(value: str, time_scale: float) -> str:
    return scaled(value, time_scale)


def scale_expr(expr: str, time_scale: float) -> str:
    def ranged(match: re.Match[str]) -> str:
        window = _at_least_min_range(scale(match.group(1), time_scale))
        step = match.group(2)
        if step:
            return f"[{window}:{scale(step, time_scale)}]"
        return f"[{window}:]" if match.group(0).endswith(":]") else f"[{window}]"

    unscalable = [m.group(0) for m in _ANY_RANGE.finditer(expr) if not _RANGE.fullmatch(m.group(0))]
    # Label matchers hold digits too ({le="0.25"}); only brackets are ranges.
    if unscalable:
        raise ValueError(f"cannot time-scale {unscalable} in: {expr}")
    result = _RANGE.sub(ranged, expr)
    result = _SECONDS_VALUE.sub(lambda m: f"{float(m.group(1)) / time_scale:g}{m.group(2)}", result)
    # An offset gets the windows' floor too: "x unless x offset 2m" pairs with "[2m]" (a
    # series new within the window), and the pair must keep covering the same span.
    return _OFFSET.sub(lambda m: f"offset {_at_least_min_range(scale(m.group(1), time_scale))}", result)


def _at_least_min_range(scaled_duration: str) -> str:
    return duration(max(seconds(MIN_RANGE), seconds(scaled_duration)))


def scale_rules(document: dict[str, Any], time_scale: float) -> dict[str, Any]:
    groups = []
    for group in document["groups"]:
        rules = []
        for rule in group["rules"]:
            scaled = {**rule, "expr": scale_expr(rule["expr"], time_scale)}
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    scaled[key] = scale(rule[key], time_scale)
            rules.append(scaled)
        groups.append({**group, "rules": rules})
    return {"groups": groups}


def write(out: Path, time_scale: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    slo = out / RULES_NAME
    slo.write_text(rules_text(time_scale))
    written = [slo]
    for source in CAUSE_RULES_FILES:
        copy = out / source.name
        document = yaml.safe_load(source.read_text())
        copy.write_text(
            f"# TIME-SCALED copy of {source.relative_to(ROOT)} for tests (every window and for: "
            f"divided by {time_scale:g}). Not for production.\n" + to_yaml_document(scale_rules(document, time_scale))
        )
        written.append(copy)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--time-scale", type=float, required=True, help="divide every window and for: by this")
    parser.add_argument("--out", type=Path, required=True, help="folder for the scaled rule files")
    args = parser.parse_args(argv)
    if args.time_scale < 1:
        parser.error("--time-scale must be at least 1")
    for path in write(args.out, args.time_scale):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
