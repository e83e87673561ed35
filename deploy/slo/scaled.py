"""Every Prometheus rule of the service with time scaled down, for tests that run the real
alert logic in seconds:

    uv run python -m deploy.slo.scaled --time-scale 60 --out DIR

writes DIR/user-service-slo.rules.yml (rendered from the spec with every window and
``for:`` divided by the scale) and DIR/user-service.rules.yml (the hand-written cause
alerts with every range selector, subquery, ``offset`` and ``for:`` divided the same way).
Rule names and labels keep their production windows, so routes, inhibitions and
dashboards work on the scaled rules unchanged. A duration that would fall under one
second becomes one second. A threshold that is a time in seconds is scaled only where a
PromQL comment marks it (``> 600  # seconds``); other numbers are values and stay.
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
from deploy.slo.rules import RULES_NAME
from deploy.slo.spec import duration, seconds
from deploy.yaml_text import to_yaml_document

CAUSE_RULES_FILE = ROOT / "deploy" / "prometheus" / "rules" / "user-service.rules.yml"

_RANGE = re.compile(r"\[(\d+[smhd])(?::(\d+[smhd]))?\]")
_OFFSET = re.compile(r"\boffset\s+(\d+[smhd])\b")
# A threshold that is a time in seconds (an age), marked so by a PromQL comment.
_SECONDS_VALUE = re.compile(r"(\d+(?:\.\d+)?)(\s*#\s*seconds\b)")


def scale(value: str, time_scale: float) -> str:
    return duration(max(1, round(seconds(value) / time_scale)))


def scale_expr(expr: str, time_scale: float) -> str:
    def ranged(match: re.Match[str]) -> str:
        window = scale(match.group(1), time_scale)
        step = match.group(2)
        return f"[{window}:{scale(step, time_scale)}]" if step else f"[{window}]"

    scaled = _RANGE.sub(ranged, expr)
    scaled = _SECONDS_VALUE.sub(lambda m: f"{float(m.group(1)) / time_scale:g}{m.group(2)}", scaled)
    return _OFFSET.sub(lambda m: f"offset {scale(m.group(1), time_scale)}", scaled)


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
    causes = out / CAUSE_RULES_FILE.name
    document = yaml.safe_load(CAUSE_RULES_FILE.read_text())
    causes.write_text(
        f"# TIME-SCALED copy of {CAUSE_RULES_FILE.relative_to(ROOT)} for tests (every window and for: "
        f"divided by {time_scale:g}). Not for production.\n" + to_yaml_document(scale_rules(document, time_scale))
    )
    return [slo, causes]


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
