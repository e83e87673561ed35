"""The two links every alert carries, absolute and built from one setting (deploy/links.yml).

An on-call person opens an alert in a pager app or a chat client, where a relative
``docs/runbook.md#...`` leads nowhere. So each alert gets

- ``runbook_url``: ``<runbook>#<alert name in lower case>``, the runbook section of that
  alert (tests/deploy/test_prometheus_rules.py checks the section exists);
- ``dashboard_url``: ``<grafana>/d/<dashboard uid>?viewPanel=<panel id>``, the panel that
  shows the alert's signal (``PANEL_OF_ALERT`` below; the panel's id is looked up by its
  title in the dashboards as code, so adding a panel cannot make a link point elsewhere).

The SLO alerts get them when deploy/slo/ renders them. The hand-written rule files and their
promtool tests hold them as text: ``relinked`` rewrites each ``runbook_url:`` line (by its
anchor) and the ``dashboard_url:`` line after it, and deploy/generate.py writes (or with
``--check``, compares) the result, so changing deploy/links.yml and running
``uv run python -m deploy.generate`` moves every link at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LINKS_FILE = ROOT / "deploy" / "links.yml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = ROOT / "deploy" / "prometheus" / "tests"

OVERVIEW = "user-service-overview"
AUTH = "user-service-auth"
DEPENDENCIES = "user-service-dependencies"

# Alert → (dashboard uid, title of the panel that shows its signal, or None for the
# dashboard as a whole). Every alert must be here: ``links`` refuses one that is not.
PANEL_OF_ALERT: dict[str, tuple[str, str | None]] = {
    "UserServiceAvailabilityBudgetBurn": (OVERVIEW, "availability burn rate"),
    "UserServiceLoginLatencyBudgetBurn": (OVERVIEW, "login-latency burn rate"),
    "UserServiceMailDeliveryBudgetBurn": (OVERVIEW, "mail-delivery burn rate"),
    "UserServiceWatchdog": (OVERVIEW, None),
    "UserServiceDown": (OVERVIEW, "Request rate by instance"),
    "UserServiceTargetDown": (OVERVIEW, "Request rate by instance"),
    "UserServiceTargetMissing": (OVERVIEW, "Request rate by instance"),
    "UserServiceProbeFailing": (OVERVIEW, "Outside-in probes"),
    "UserServiceProbeMissing": (OVERVIEW, "Outside-in probes"),
    "UserServiceCertificateExpiry": (OVERVIEW, "Days until the served certificate expires"),
    "UserServiceNotReady": (OVERVIEW, "Readiness"),
    "UserServiceInstanceNotReady": (OVERVIEW, "Readiness"),
    "UserServiceReadinessFlapping": (OVERVIEW, "Readiness"),
    "UserServiceTrafficDrop": (OVERVIEW, "Request rate by route"),
    "UserServiceHashingPoolSaturated": (OVERVIEW, "Hashing pool saturation"),
    "UserServiceHashingRejections": (OVERVIEW, "Hashes shed (503)"),
    "UserServiceDBPoolExhausted": (OVERVIEW, "Database connection wait"),
    "UserServiceCPUThrottled": (OVERVIEW, "CPU throttling (Kubernetes)"),
    "UserServiceMemoryNearLimit": (OVERVIEW, "Memory against the limit (Kubernetes)"),
    "UserServiceOOMKilled": (OVERVIEW, "Restarts (last hour)"),
    "UserServiceCrashLooping": (OVERVIEW, "Restarts (last hour)"),
    "UserServiceAutoscalerAtMax": (OVERVIEW, "CPU throttling (Kubernetes)"),
    "UserServiceMailOutboxStuck": (OVERVIEW, "Oldest waiting mail"),
    "UserServiceRefreshTokenReuseSpike": (AUTH, "Refresh-token reuse detections (15 min)"),
    "UserServiceCredentialStuffing": (AUTH, "Login failure ratio"),
    "UserServiceMfaFailureSpike": (AUTH, "Second-factor codes by result"),
    "UserServiceMfaRecoveryCodeUsed": (AUTH, "Recovery codes used and enrolments (last hour)"),
    "UserServiceRateLimiting": (AUTH, "Rate-limited requests by route"),
    "UserServiceSharedStoreDown": (AUTH, "Shared store (Redis) fallbacks"),
    "UserServiceDatabaseWalArchivingFailing": (DEPENDENCIES, "PostgreSQL on CloudNativePG (Kubernetes)"),
    "UserServiceDatabaseBackupFailed": (DEPENDENCIES, "PostgreSQL on CloudNativePG (Kubernetes)"),
    "UserServiceDatabaseBackupMissing": (DEPENDENCIES, "PostgreSQL on CloudNativePG (Kubernetes)"),
    "UserServiceDatabaseReplicationLag": (DEPENDENCIES, "Standby replication lag"),
}


class LinksError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Links:
    runbook_url: str
    dashboard_url: str


@dataclass(frozen=True, slots=True)
class Bases:
    runbook: str
    grafana: str


def _absolute(value: object, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s#?]+", value):
        raise LinksError(f"{LINKS_FILE.name}: {key} must be an absolute http(s) URL without # or ?, is {value!r}")
    return value.rstrip("/")


@cache
def bases() -> Bases:
    raw = yaml.safe_load(LINKS_FILE.read_text())
    if not isinstance(raw, dict) or set(raw) != {"runbook", "grafana"}:
        raise LinksError(f"{LINKS_FILE.name}: exactly the keys runbook and grafana")
    return Bases(runbook=_absolute(raw["runbook"], "runbook"), grafana=_absolute(raw["grafana"], "grafana"))


@cache
def panel_ids() -> dict[tuple[str, str], int]:
    """(dashboard uid, panel title) → panel id, rows included, from the rendered dashboards."""
    # Imported here: the dashboards read the SLO spec, whose rules import this module.
    from deploy.grafana.generate import rendered  # noqa: PLC0415

    ids: dict[tuple[str, str], int] = {}
    for text in rendered().values():
        dashboard = json.loads(text)
        stack = list(dashboard["panels"])
        while stack:
            panel = stack.pop()
            key = (dashboard["uid"], panel["title"])
            if key in ids:
                raise LinksError(f"dashboard {dashboard['uid']}: two panels titled {panel['title']!r}")
            ids[key] = panel["id"]
            stack.extend(panel.get("panels", []))
    return ids


def links(alert: str) -> Links:
    if alert not in PANEL_OF_ALERT:
        raise LinksError(f"{alert}: no dashboard panel in deploy/alert_links.py PANEL_OF_ALERT")
    uid, title = PANEL_OF_ALERT[alert]
    dashboard = f"{bases().grafana}/d/{uid}"
    if title is not None:
        if (uid, title) not in panel_ids():
            raise LinksError(f"{alert}: dashboard {uid} has no panel titled {title!r}")
        dashboard += f"?viewPanel={panel_ids()[uid, title]}"
    return Links(runbook_url=f"{bases().runbook}#{alert.lower()}", dashboard_url=dashboard)


_RUNBOOK_LINE = re.compile(r"^(?P<indent>\s*)runbook_url: \S*#(?P<anchor>\w+)\s*$")
_DASHBOARD_LINE = re.compile(r"^\s*dashboard_url: ")


def relinked(text: str) -> str:
    """``text`` (a rules or promtool test file) with each alert's two link lines rebuilt."""
    by_anchor = {alert.lower(): alert for alert in PANEL_OF_ALERT}
    out: list[str] = []
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        match = _RUNBOOK_LINE.match(line)
        if match is None:
            out.append(line)
            continue
        anchor = match["anchor"]
        if anchor not in by_anchor:
            raise LinksError(f"runbook_url #{anchor}: no such alert in PANEL_OF_ALERT")
        alert_links = links(by_anchor[anchor])
        indent = match["indent"]
        out.append(f"{indent}runbook_url: {alert_links.runbook_url}\n")
        out.append(f"{indent}dashboard_url: {alert_links.dashboard_url}\n")
        if index < len(lines) and _DASHBOARD_LINE.match(lines[index]):
            index += 1
    return "".join(out)


def linked_files() -> list[Path]:
    """The hand-written files whose link lines this module owns."""
    generated = {"user-service-slo.rules.yml"}
    rules = [path for path in sorted(RULES_DIR.glob("*.yml")) if path.name not in generated]
    tests = [path for path in sorted(RULE_TESTS_DIR.glob("*.test.yml")) if not path.name.startswith("slo-burn-rates")]
    return rules + tests


def rendered() -> dict[Path, str]:
    return {path: relinked(path.read_text()) for path in linked_files()}
