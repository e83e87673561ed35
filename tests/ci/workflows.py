"""Reading the GitHub Actions workflows and running the linters on them, for the tests.

Every check is a function that returns its complaints, so that a test can run it on the
real workflows (no complaint) and on a deliberately broken copy (the expected complaint).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB_DIR = ROOT / ".github"
WORKFLOWS_DIR = GITHUB_DIR / "workflows"
SCAN = ROOT / "scripts" / "scan"
TOOL_TIMEOUT_SECONDS = 120


def workflow_files() -> list[Path]:
    files = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])
    assert files, f"no workflows in {WORKFLOWS_DIR}"
    return files


def load_workflow(text: str) -> dict[str, Any]:
    document = yaml.safe_load(text)
    assert isinstance(document, dict), "a workflow is a mapping"
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in document:
        document["on"] = document.pop(True)
    return document


def tool(name: str) -> str:
    """A linter from the project's environment (a dev dependency); a failure, never a skip."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is missing: it is a dev dependency of the project, run `uv sync`")
    return found


def require_shellcheck() -> None:
    # Without shellcheck, actionlint silently skips the run: steps.
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: scripts/test installs it (apt-get install shellcheck)")


@dataclass(frozen=True, slots=True)
class ToolRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> ToolRun:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS, check=False, env=env
    )
    return ToolRun(result.returncode, result.stdout, result.stderr)


def actionlint(files: list[Path], cwd: Path) -> ToolRun:
    require_shellcheck()
    return run([tool("actionlint"), "-no-color", *map(str, files)], cwd)


def zizmor(target: Path) -> tuple[ToolRun, list[str]]:
    """zizmor's offline audits of a folder; its run and the ids of the audits that fired."""
    result = run([tool("zizmor"), "--offline", "--no-progress", "--format", "json", str(target)], target)
    # Exit 0: no findings; 10 and up: findings, by their highest severity; else: an error.
    assert result.returncode == 0 or result.returncode >= 10, f"zizmor could not run:\n{result.output}"
    findings = json.loads(result.stdout or "[]")
    return result, [str(finding["ident"]) for finding in findings if not finding.get("ignored")]


# --- pinning --------------------------------------------------------------------------------

USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)\s*(?:#\s*(?P<comment>.*))?$")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^v\d+(?:\.\d+){0,2}\b")


def pinning_complaints(text: str, name: str) -> list[str]:
    """Every `uses:` of another repository names a full commit SHA and its version in a comment."""
    complaints = []
    for number, line in enumerate(text.splitlines(), start=1):
        if (match := USES.match(line)) is None:
            continue
        ref, comment = match["ref"].strip("'\""), (match["comment"] or "").strip()
        if ref.startswith(("./", "$/")):
            continue  # this repository, at the commit that is running
        if ref.startswith("docker://"):
            if "@sha256:" not in ref:
                complaints.append(f"{name}:{number}: {ref} is not pinned by digest")
            continue
        if not PINNED.match(ref):
            complaints.append(f"{name}:{number}: {ref} is not pinned to a 40-hex commit SHA")
        elif not VERSION_COMMENT.match(comment):
            complaints.append(f"{name}:{number}: {ref} has no `# vX.Y.Z` comment naming its version")
    return complaints


# --- permissions ------------------------------------------------------------------------------


def permission_complaints(workflow: dict[str, Any], name: str) -> list[str]:
    """The workflow and each of its jobs say which token permissions they get."""
    complaints = []
    if "permissions" not in workflow:
        complaints.append(f"{name}: no top-level permissions (the default token may be read-write)")
    for job_name, job in (workflow.get("jobs") or {}).items():
        if "permissions" not in job:
            complaints.append(f"{name}: job {job_name} declares no permissions")
    return complaints


def write_scopes(workflow: dict[str, Any]) -> dict[str, set[str]]:
    """For each job, the permission scopes it may write."""
    scopes: dict[str, set[str]] = {}
    for job_name, job in (workflow.get("jobs") or {}).items():
        permissions = job.get("permissions") or {}
        if isinstance(permissions, str):  # write-all / read-all
            scopes[job_name] = {"*"} if permissions == "write-all" else set()
        else:
            scopes[job_name] = {scope for scope, level in permissions.items() if level == "write"}
    return scopes
