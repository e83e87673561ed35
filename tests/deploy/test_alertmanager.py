"""The shipped Alertmanager configuration: amtool accepts it, every alert the rules define is
routed to the receiver its severity names, and the inhibitions the runbook promises hold in
a real Alertmanager."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.deploy.alert_stack import ALERTMANAGER_CONFIG, alert_stack
from tests.deploy.artifacts import load_rules, require_tool

# The receiver each severity routes to (critical pages, warning opens a ticket, as the usual
# routing trees expect); the Watchdog (severity none) goes to the dead man's switch.
SEVERITIES = {"critical": "page", "warning": "ticket", "none": "deadman"}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_amtool_accepts_the_config() -> None:
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 inhibit rules" in result.stdout


def test_secrets_are_read_from_files_never_written_in_the_config() -> None:
    text = ALERTMANAGER_CONFIG.read_text()
    assert "routing_key_file:" in text
    assert "api_url_file:" in text
    assert "credentials_file:" in text
    for inline in ("routing_key:", "api_url:", "service_key:", "hooks.slack.com", "credentials:"):
        assert inline not in text


@pytest.mark.parametrize("rule", [r for r in load_rules() if r.alert], ids=lambda r: f"{r.alert}{r.labels}")
def test_every_alert_reaches_the_receiver_its_severity_names(rule: object) -> None:
    labels = {"alertname": rule.alert, "job": "user-service", **rule.labels}  # type: ignore[attr-defined]
    severity = labels.get("severity")
    assert severity in SEVERITIES, f"{labels['alertname']}: severity {severity!r} has no route"
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={SEVERITIES[str(severity)]}",
        *(f"{name}={value}" for name, value in labels.items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_alert_without_a_known_severity_still_reaches_someone() -> None:
    result = amtool(
        "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", "--verify.receivers=ticket", "alertname=X"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _alert(labels: dict[str, str]) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "labels": {"job": "user-service", **labels},
        "annotations": {"summary": labels["alertname"]},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }


def _key(labels: dict[str, str]) -> str:
    tier = labels.get("burn_rate", labels.get("instance", ""))
    if labels["alertname"] == "UserServiceCertificateExpiry":
        tier = labels["urgency"]
    return f"{labels['alertname']} {tier}".strip()


@pytest.mark.slow
async def test_a_page_holds_back_the_tickets_of_the_same_slo_and_nothing_else(tmp_path: Path) -> None:
    burn = "UserServiceAvailabilityBudgetBurn"
    page = {"alertname": burn, "slo": "availability", "severity": "critical", "urgency": "page", "burn_rate": "14.4"}
    ticket = {"alertname": burn, "slo": "availability", "severity": "warning", "urgency": "ticket", "burn_rate": "3"}
    other_slo = {
        "alertname": "UserServiceLoginLatencyBudgetBurn",
        "slo": "login-latency",
        "severity": "warning",
        "urgency": "ticket",
    }
    everyone_down = {"alertname": "UserServiceDown", "severity": "critical", "urgency": "page"}
    one_down = {"alertname": "UserServiceTargetDown", "severity": "warning", "urgency": "ticket", "instance": "a:8000"}
    from_outside = {
        "alertname": "UserServiceProbeFailing",
        "severity": "critical",
        "urgency": "page",
        "job": "user-service-probe",
    }
    not_ready = {"alertname": "UserServiceNotReady", "severity": "critical", "urgency": "page"}
    expiring = {
        "alertname": "UserServiceCertificateExpiry",
        "severity": "critical",
        "urgency": "page",
        "job": "user-service-probe",
    }
    renewal = {
        "alertname": "UserServiceCertificateExpiry",
        "severity": "warning",
        "urgency": "ticket",
        "job": "user-service-probe",
    }
    # No rules: only the alerts posted here (an empty Prometheus would raise TargetMissing).
    async with alert_stack(tmp_path, target=None, with_rules=False) as stack:
        async with httpx.AsyncClient(base_url=stack.alertmanager_url) as client:
            sent = [
                _alert(labels)
                for labels in (
                    page,
                    ticket,
                    other_slo,
                    everyone_down,
                    one_down,
                    from_outside,
                    not_ready,
                    expiring,
                    renewal,
                )
            ]
            assert (await client.post("/api/v2/alerts", json=sent)).status_code == 200
        states: dict[str, str] = {}
        for _ in range(40):  # inhibitions are computed as the alerts arrive; give it 10 s
            states = {_key(a["labels"]): a["status"]["state"] for a in await stack.alerts()}
            if list(states.values()).count("suppressed") == 5:
                break
            await asyncio.sleep(0.25)
        assert states == {
            f"{burn} 14.4": "active",
            f"{burn} 3": "suppressed",
            "UserServiceLoginLatencyBudgetBurn": "active",
            "UserServiceDown": "active",
            "UserServiceTargetDown a:8000": "suppressed",
            # Held back by UserServiceDown, and still holding back the readiness page.
            "UserServiceProbeFailing": "suppressed",
            "UserServiceNotReady": "suppressed",
            "UserServiceCertificateExpiry page": "active",
            "UserServiceCertificateExpiry ticket": "suppressed",
        }
