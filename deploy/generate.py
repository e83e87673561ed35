"""Renders every generated monitoring and deployment artifact from its single source.

    uv run python -m deploy.generate          # rewrite the files
    uv run python -m deploy.generate --check  # exit 1 if one is stale, write nothing

- from the SLO spec deploy/slo/slos.yml: the SLO recording rules and burn-rate alerts
  (deploy/prometheus/rules/user-service-slo.rules.yml), their promtool tests, and the
  Locust gates the SLOs imply (loadtests/objectives.toml); see deploy/slo/;
- deploy/grafana/dashboards/*.json from the dashboards as code (deploy/grafana/), whose
  SLO panels read the same spec;
- their Kubernetes copies, ConfigMaps for the Grafana sidecar, and the PrometheusRule
  holding the SLO rules and deploy/prometheus/rules/user-service.rules.yml
  (k8s/base/monitoring/);
- the Locust scenarios as a ConfigMap for the distributed load test (k8s/loadtest/).

The objectives, alert rules and dashboards thus exist once and are copied only by this command; the
tests fail when a copy drifts from its source.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from deploy import alert_links, k8s_artifacts
from deploy.grafana import generate as grafana
from deploy.slo import generate as slo

COMMAND = "uv run python -m deploy.generate"


def rendered() -> dict[Path, str]:
    """Every generated file and the text it should contain."""
    return {**slo.rendered(), **grafana.rendered(), **alert_links.rendered(), **k8s_artifacts.rendered()}


def _shown(path: Path) -> str:
    return str(path.relative_to(k8s_artifacts.ROOT)) if path.is_relative_to(k8s_artifacts.ROOT) else str(path)


def stale(files: dict[Path, str]) -> list[Path]:
    return [path for path, text in files.items() if not path.exists() or path.read_text() != text]


def main(argv: Sequence[str] | None = None, files: Callable[[], dict[Path, str]] | None = None) -> int:
    """``files``: a subset to render instead of everything (deploy/grafana/generate.py)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a rendered file is stale, write nothing")
    args = parser.parse_args(argv)
    texts = (files or rendered)()
    if args.check:
        outdated = stale(texts)
        for path in outdated:
            sys.stderr.write(f"stale: {_shown(path)} (run: {COMMAND})\n")
        return 1 if outdated else 0
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        sys.stdout.write(f"wrote {_shown(path)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
