"""deploy/links.yml is the one place an adopter sets where alerts link: changing it and
regenerating moves every link, in the hand-written rules, their promtool tests, the SLO
alerts and the Kubernetes PrometheusRule alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy import alert_links, generate


@pytest.fixture
def own_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    links = tmp_path / "links.yml"
    links.write_text("runbook: https://wiki.internal/sre/user-service\ngrafana: https://grafana.internal/\n")
    monkeypatch.setattr(alert_links, "LINKS_FILE", links)
    alert_links.bases.cache_clear()
    yield
    alert_links.bases.cache_clear()


def _annotations(groups: list[dict[str, object]]) -> list[dict[str, str]]:
    return [rule["annotations"] for group in groups for rule in group["rules"] if "alert" in rule]  # type: ignore[attr-defined]


@pytest.mark.usefixtures("own_links")
def test_one_setting_moves_every_link_of_every_alert() -> None:
    files = generate.rendered()
    prometheus_rule = yaml.safe_load(files[alert_links.ROOT / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"])
    annotations = _annotations(prometheus_rule["spec"]["groups"])
    rules_file = yaml.safe_load(files[alert_links.RULES_DIR / "user-service.rules.yml"])
    annotations += _annotations(rules_file["groups"])
    assert len(annotations) > 30
    for annotation in annotations:
        assert annotation["runbook_url"].startswith("https://wiki.internal/sre/user-service#userservice")
        assert annotation["dashboard_url"].startswith("https://grafana.internal/d/user-service-")
    outage_test = files[alert_links.RULE_TESTS_DIR / "outage.test.yml"]
    assert "example.com/d/" not in outage_test
    assert "runbook_url: https://wiki.internal/sre/user-service#userserviceprobefailing\n" in outage_test


def test_the_links_are_rebuilt_not_appended() -> None:
    text = (alert_links.RULES_DIR / "user-service.rules.yml").read_text()
    assert alert_links.relinked(text) == text
    assert alert_links.relinked(alert_links.relinked(text)) == text


@pytest.mark.parametrize(
    "setting",
    [
        "runbook: docs/runbook.md\ngrafana: https://g\n",
        "runbook: https://r\n",
        "runbook: https://r\ngrafana: https://g/?orgId=1\n",
    ],
)
def test_a_setting_that_would_give_relative_or_broken_links_is_refused(
    setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "links.yml"
    links.write_text(setting)
    monkeypatch.setattr(alert_links, "LINKS_FILE", links)
    alert_links.bases.cache_clear()
    try:
        with pytest.raises(alert_links.LinksError):
            alert_links.links("UserServiceDown")
    finally:
        alert_links.bases.cache_clear()


def test_an_alert_without_a_panel_is_refused_not_linked_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(alert_links.PANEL_OF_ALERT, "UserServiceDown", ("user-service-overview", "No such panel"))
    with pytest.raises(alert_links.LinksError, match="no panel titled"):
        alert_links.links("UserServiceDown")
    with pytest.raises(alert_links.LinksError, match="no dashboard panel"):
        alert_links.links("UserServiceSomethingNew")
