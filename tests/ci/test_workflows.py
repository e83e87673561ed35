"""The GitHub Actions workflows are correct before anyone pushes them: actionlint (with
shellcheck on every run: step) and zizmor (offline) pass on them, every action is pinned to
a commit with its version named, every workflow and job declares its token permissions.

Each check is also run on a deliberately broken copy, which it must reject.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.ci.workflows import (
    GITHUB_DIR,
    SCAN,
    WORKFLOWS_DIR,
    actionlint,
    load_workflow,
    permission_complaints,
    pinning_complaints,
    workflow_files,
    write_scopes,
    zizmor,
)

CI = WORKFLOWS_DIR / "ci.yml"
SECURITY = WORKFLOWS_DIR / "security.yml"
RELEASE = WORKFLOWS_DIR / "release.yml"
DOCKERFILE = GITHUB_DIR.parent / "Dockerfile"


def broken_copy(tmp_path: Path, source: Path, old: str | re.Pattern[str], new: str) -> Path:
    """The repository's .github/ in tmp_path, with one change to one workflow."""
    shutil.copytree(GITHUB_DIR, tmp_path / ".github")
    target = tmp_path / ".github" / "workflows" / source.name
    text = target.read_text()
    changed = old.sub(new, text, count=1) if isinstance(old, re.Pattern) else text.replace(old, new, 1)
    assert changed != text, f"the breakage did not apply to {source.name}: {old!r}"
    target.write_text(changed)
    return target


# --- actionlint -------------------------------------------------------------------------------


def test_actionlint_passes_on_every_workflow() -> None:
    result = actionlint(workflow_files(), WORKFLOWS_DIR.parent.parent)
    assert result.returncode == 0, result.output


# Each: a workflow, a change that breaks it, and the actionlint rule that must report it.
ACTIONLINT_BREAKAGES: dict[str, tuple[Path, str, str]] = {
    # shellcheck, through actionlint: an unquoted variable in a run: step.
    "shellcheck": (SECURITY, './scripts/scan "$SCANNER"', "./scripts/scan $SCANNER"),
    # A step output that no step with that id produces.
    "expression": (
        RELEASE,
        "steps.build.outputs.digest }}\n          push-to-registry",
        "steps.bild.outputs.digest }}\n          push-to-registry",
    ),
    # A job that needs a job which does not exist.
    "job-needs": (RELEASE, "needs: [ci]", "needs: [tests]"),
    # A key GitHub does not know.
    "syntax-check": (CI, "    timeout-minutes: 15\n", "    timeout-minute: 15\n"),
    # A runner label that does not exist.
    "runner-label": (CI, "runs-on: ubuntu-24.04", "runs-on: ubuntu-24.40"),
}


@pytest.mark.parametrize("rule", sorted(ACTIONLINT_BREAKAGES))
def test_actionlint_rejects_a_broken_workflow(rule: str, tmp_path: Path) -> None:
    source, old, new = ACTIONLINT_BREAKAGES[rule]
    broken = broken_copy(tmp_path, source, old, new)
    result = actionlint([broken], tmp_path)
    assert result.returncode == 1, result.output
    assert f"[{rule}]" in result.output, result.output


# --- zizmor -----------------------------------------------------------------------------------


def test_zizmor_passes_on_every_workflow_and_dependabot(tmp_path: Path) -> None:
    # A copy of .github/ alone: what zizmor audits, without the rest of the tree.
    shutil.copytree(GITHUB_DIR, tmp_path / ".github")
    result, findings = zizmor(tmp_path)
    assert findings == [], result.output
    assert result.returncode == 0, result.output


ZIZMOR_BREAKAGES: dict[str, tuple[Path, str | re.Pattern[str], str]] = {
    # An attacker-controlled value expanded into a shell script.
    "template-injection": (CI, "      - run: uv sync --locked\n", '      - run: echo "${{ github.head_ref }}"\n'),
    # An action on a movable tag instead of a commit.
    "unpinned-uses": (CI, re.compile(r"actions/checkout@[0-9a-f]{40} # v[\d.]+"), "actions/checkout@v6"),
    # The checkout leaves the token in .git/config for every later step.
    "artipacked": (
        SECURITY,
        "          fetch-depth: 0\n          persist-credentials: false\n",
        "          fetch-depth: 0\n",
    ),
    # A job that may write everything.
    "excessive-permissions": (SECURITY, "    permissions:\n      contents: read\n", "    permissions: write-all\n"),
    # Without its reasoned suppression, the workflow_run trigger is reported: the ignore
    # comment in release.yml is what silences it, nothing else.
    "dangerous-triggers": (RELEASE, " # zizmor: ignore[dangerous-triggers] see the guard on the publish job", ""),
}


@pytest.mark.parametrize("audit", sorted(ZIZMOR_BREAKAGES))
def test_zizmor_rejects_a_broken_workflow(audit: str, tmp_path: Path) -> None:
    source, old, new = ZIZMOR_BREAKAGES[audit]
    broken_copy(tmp_path, source, old, new)
    result, findings = zizmor(tmp_path)
    assert audit in findings, result.output
    assert result.returncode >= 10, result.output


# --- pinning ------------------------------------------------------------------------------


def test_every_action_is_pinned_to_a_commit_with_its_version_in_a_comment() -> None:
    uses = 0
    for path in workflow_files():
        text = path.read_text()
        uses += text.count("uses:")
        assert pinning_complaints(text, path.name) == []
    assert uses > 10, "the pin check found almost no `uses:` lines: is the pattern still right?"


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("      - uses: actions/checkout@v6", "not pinned to a 40-hex commit SHA"),
        ("      - uses: actions/checkout@main # v6.0.2", "not pinned to a 40-hex commit SHA"),
        ("      - uses: actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83d # v6.0.2", "not pinned"),
        ("      - uses: actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd", "no `# vX.Y.Z` comment"),
        ("      - uses: actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd # latest", "no `# vX.Y.Z`"),
        ("      - uses: docker://alpine:3.22", "not pinned by digest"),
    ],
)
def test_the_pin_check_rejects_a_movable_reference(line: str, complaint: str) -> None:
    complaints = pinning_complaints(f"jobs:\n  a:\n    steps:\n{line}\n", "broken.yml")
    assert len(complaints) == 1
    assert complaint in complaints[0]


def test_the_pin_check_accepts_this_repositorys_own_workflows_and_actions() -> None:
    text = "jobs:\n  a:\n    uses: $/.github/workflows/ci.yml\n  b:\n    steps:\n      - uses: ./.github/actions/x\n"
    assert pinning_complaints(text, "local.yml") == []


# --- permissions --------------------------------------------------------------------------------


def test_every_workflow_and_job_declares_its_permissions() -> None:
    for path in workflow_files():
        workflow = load_workflow(path.read_text())
        assert permission_complaints(workflow, path.name) == []
        # Nothing is granted to a whole workflow: each job asks for what it needs.
        assert workflow["permissions"] == {}, f"{path.name}: top-level permissions should be {{}}"


def test_the_permission_check_rejects_a_job_without_permissions() -> None:
    workflow = load_workflow(CI.read_text())
    del workflow["jobs"]["lint"]["permissions"]
    del workflow["permissions"]
    assert permission_complaints(workflow, "ci.yml") == [
        "ci.yml: no top-level permissions (the default token may be read-write)",
        "ci.yml: job lint declares no permissions",
    ]


def test_only_the_jobs_that_need_it_may_write() -> None:
    expected = {
        "ci.yml": {"lint": set(), "test": set(), "container": set()},
        # Code scanning uploads only.
        "security.yml": {"offline": set(), "pip-audit": set(), "trivy": {"security-events"}, "secrets": set()},
        # Push, sign and attest only in the job that publishes.
        "release.yml": {"ci": set(), "publish": {"packages", "id-token", "attestations"}},
    }
    actual = {path.name: write_scopes(load_workflow(path.read_text())) for path in workflow_files()}
    assert actual == expected


# --- what the workflows promise ------------------------------------------------------------


def test_release_publishes_only_what_ci_passed() -> None:
    release = load_workflow(RELEASE.read_text())
    trigger = release["on"]["workflow_run"]
    assert trigger == {"workflows": ["ci"], "types": ["completed"], "branches": ["main"]}
    assert release["on"]["push"] == {"tags": ["v*.*.*"]}
    ci_call = release["jobs"]["ci"]
    assert ci_call["uses"].endswith(".github/workflows/ci.yml")
    publish = release["jobs"]["publish"]
    assert publish["needs"] == ["ci"]
    for condition in (
        "needs.ci.result == 'success'",
        "github.event.workflow_run.conclusion == 'success'",
        "github.event.workflow_run.head_branch == 'main'",
        "github.event.workflow_run.head_repository.full_name == github.repository",
    ):
        assert condition in publish["if"], condition
    ci = load_workflow(CI.read_text())
    assert ci["name"] == "ci", "release.yml's workflow_run names the ci workflow by its name"
    assert "workflow_call" in ci["on"]


def test_release_publishes_a_tag_on_main_after_the_scan_and_moves_latest_only_for_the_highest_release() -> None:
    publish = load_workflow(RELEASE.read_text())["jobs"]["publish"]
    steps = publish["steps"]
    checkout = steps[0]
    assert checkout["with"]["fetch-depth"] == 0, "the tag's ancestry and the other tags are needed"
    on_main = next(step for step in steps if "merge-base --is-ancestor" in str(step.get("run", "")))
    assert on_main["if"] == "github.event_name == 'push'"
    assert '"$REVISION" origin/main' in on_main["run"]
    names = next(step for step in steps if step.get("id") == "names")
    # latest: a final version only, and only the highest final tag.
    assert "final='^[0-9]+\\.[0-9]+\\.[0-9]+$'" in names["run"]
    assert '"$version" =~ $final' in names["run"]
    assert "sort -V | tail -n 1" in names["run"]
    meta = next(step for step in steps if step.get("id") == "meta")
    assert "latest=${{ steps.names.outputs.latest }}" in meta["with"]["flavor"]
    # The scan comes before the only step that pushes.
    scan = next(i for i, step in enumerate(steps) if "scripts/scan trivy-image" in str(step.get("run", "")))
    pushes = [i for i, step in enumerate(steps) if step.get("with", {}).get("push") is True]
    assert pushes, "nothing pushes?"
    assert scan < min(pushes)
    scanned = steps[scan - 2]
    assert scanned["with"]["load"] is True
    assert scanned["with"]["tags"] == steps[scan]["env"]["SCAN_IMAGE"]


def test_release_builds_both_platforms_with_sbom_provenance_and_a_keyless_signature() -> None:
    steps = load_workflow(RELEASE.read_text())["jobs"]["publish"]["steps"]
    build = next(
        step
        for step in steps
        if str(step.get("uses", "")).startswith("docker/build-push-action@") and step["with"].get("push") is True
    )
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["sbom"] is True
    assert build["with"]["provenance"] == "mode=max"
    assert "type=registry" in build["with"]["cache-from"]
    assert "type=registry" in build["with"]["cache-to"]
    # The build arguments the Dockerfile writes into its OCI labels, under its names.
    build_args = {line.split("=")[0].strip() for line in build["with"]["build-args"].splitlines() if line.strip()}
    assert build_args == {"VERSION", "REVISION", "SOURCE"}
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), re.MULTILINE))
    assert build_args <= declared, f"the Dockerfile does not declare {build_args - declared}"
    sign = next(step for step in steps if "cosign sign" in str(step.get("run", "")))
    assert '--yes "$GHCR_IMAGE@$DIGEST"' in sign["run"]
    assert any(str(step.get("uses", "")).startswith("actions/attest-build-provenance@") for step in steps)
    # Registry credentials come from secrets, never from the YAML.
    text = RELEASE.read_text()
    assert "password: ${{ secrets.GITHUB_TOKEN }}" in text
    assert "DOCKERHUB_TOKEN: ${{ secrets.DOCKERHUB_TOKEN }}" in text


def test_the_security_workflow_runs_every_offline_scanner_of_scripts_scan() -> None:
    listed = re.search(r"^offline=\((?P<names>[^)]*)\)$", SCAN.read_text(), re.MULTILINE)
    assert listed is not None, "scripts/scan has no offline=(...) list"
    matrix = load_workflow(SECURITY.read_text())["jobs"]["offline"]["strategy"]["matrix"]["scanner"]
    assert matrix == listed["names"].split()


def test_dependabot_updates_every_kind_of_pinned_dependency_weekly() -> None:
    config = yaml.safe_load((GITHUB_DIR / "dependabot.yml").read_text())
    updates = {(update["package-ecosystem"], update["directory"]): update for update in config["updates"]}
    assert set(updates) == {
        ("uv", "/"),
        ("github-actions", "/"),
        ("docker", "/"),
        ("docker-compose", "/"),
        ("pip", "/.github/scanners"),
    }
    for update in updates.values():
        assert update["schedule"]["interval"] == "weekly"
        assert update["groups"], "grouped: one pull request per ecosystem and week"


def test_the_scanner_locks_hold_the_pinned_versions() -> None:
    # `scripts/scan --relock` must have run after a pin in .github/scanners/*.in changed.
    scanners = GITHUB_DIR / "scanners"
    inputs = sorted(scanners.glob("*.in"))
    assert {path.stem for path in inputs} == {"semgrep", "checkov", "trivy", "pip-audit"}
    for path in inputs:
        lock = (scanners / f"{path.stem}-requirements.txt").read_text()
        for pin in path.read_text().split():
            assert re.search(rf"^{re.escape(pin)} \\$", lock, re.MULTILINE), f"{pin} is not in {path.stem}'s lock"
        assert "--hash=sha256:" in lock
