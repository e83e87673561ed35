"""The generated copies under k8s/ (Prometheus rules, dashboards, the Locust files) match
their sources, and the drift check catches an edited or missing copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import generate, k8s_artifacts
from tests.deploy import k8s_checks as checks


def test_generated_files_are_current() -> None:
    stale = [str(path.relative_to(checks.ROOT)) for path in generate.stale(generate.rendered())]
    assert not stale, f"{stale} differ from their sources: run `{generate.COMMAND}`"
    assert generate.main(["--check"]) == 0


def test_drift_check_rejects_an_edited_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, text = k8s_artifacts.PROMETHEUS_RULE_FILE, k8s_artifacts.rendered()[k8s_artifacts.PROMETHEUS_RULE_FILE]
    edited = tmp_path / path.name
    edited.write_text(text.replace("for: 2m", "for: 20m", 1))
    assert edited.read_text() != text
    monkeypatch.setattr(generate, "rendered", lambda: {edited: text, tmp_path / "missing.yaml": text})
    assert generate.stale(generate.rendered()) == [edited, tmp_path / "missing.yaml"]
    assert generate.main(["--check"]) == 1


def test_grafana_generator_also_writes_the_dashboards_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.grafana import generate as grafana_generate

    copy_file = tmp_path / "dashboards.yaml"
    monkeypatch.setattr(grafana_generate, "rendered", dict)  # leave the real JSON alone
    monkeypatch.setattr(k8s_artifacts, "dashboard_copies", lambda: {copy_file: "copy\n"})
    assert grafana_generate.main(["--check"]) == 1  # the missing copy under k8s/ counts
    assert grafana_generate.main([]) == 0
    assert copy_file.read_text() == "copy\n"
    assert grafana_generate.main(["--check"]) == 0
