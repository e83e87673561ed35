"""scripts/scan, the script .ci/run and the security workflow run, fails on a new finding.

Each fast scanner (those from the project's dev dependencies, nothing to install) runs
through scripts/scan on a small clean tree, which passes, and on the same tree with one
deliberately bad file, which must fail the scan and name the scanner. SCAN_ROOT points the
script at the temporary tree while it keeps this checkout's tools and configuration files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci.workflows import ROOT, SCAN, TOOL_TIMEOUT_SECONDS, require_shellcheck

CONFIGS = (".hadolint.yaml", ".yamllint.yml", ".bandit.yml")

CLEAN_FILES = {
    "Dockerfile": (
        "FROM debian:bookworm-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000\n"
        "USER 10001\n"
        'ENTRYPOINT ["true"]\n'
    ),
    "app/ok.py": 'import hashlib\n\nDIGEST = hashlib.sha256(b"x").hexdigest()\n',
    "config.yaml": "name: clean\nitems:\n  - one\n",
    "scripts/tool": '#!/usr/bin/env bash\nset -euo pipefail\necho "$1"\n',
    ".github/workflows/ok.yml": (
        "name: ok\n"
        "on: push\n"
        "permissions: {}\n"
        "jobs:\n"
        "  hello:\n"
        "    runs-on: ubuntu-24.04\n"
        "    permissions: {}\n"
        "    steps:\n"
        "      - run: echo hello\n"
    ),
}

# Each scanner, and the one file that gives it a finding.
BROKEN_FILES = {
    "hadolint": ("Dockerfile", 'FROM python:latest\nENTRYPOINT ["true"]\n'),  # DL3007: an unpinned base
    "bandit": ("app/bad.py", 'import hashlib\n\nDIGEST = hashlib.md5(b"x").hexdigest()\n'),  # B324, high
    "yamllint": ("config.yaml", "name: clean\nname: twice\n"),  # key-duplicates
    "shellcheck": ("scripts/tool", "#!/usr/bin/env bash\necho $1\n"),  # SC2086
    "actionlint": (".github/workflows/ok.yml", CLEAN_FILES[".github/workflows/ok.yml"].replace("runs-on", "run-on")),
    "zizmor": (
        ".github/workflows/ok.yml",
        CLEAN_FILES[".github/workflows/ok.yml"]
        .replace("on: push", "on: pull_request")
        .replace("echo hello", 'echo "${{ github.event.pull_request.title }}"'),
    ),
}


def make_tree(path: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        if name.startswith("scripts/"):
            target.chmod(0o755)
    for config in CONFIGS:
        shutil.copy(ROOT / config, path / config)
    # scripts/scan finds files through git (tracked or new, never ignored ones).
    subprocess.run(["git", "init", "--quiet", str(path)], check=True, timeout=30)
    return path


def scan(tree: Path, *scanners: str) -> subprocess.CompletedProcess[str]:
    require_shellcheck()
    return subprocess.run(
        [str(SCAN), *scanners],
        env={**os.environ, "SCAN_ROOT": str(tree)},
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS * len(scanners),
        check=False,
    )


def test_scan_passes_on_a_clean_tree(tmp_path: Path) -> None:
    result = scan(make_tree(tmp_path, CLEAN_FILES), *sorted(BROKEN_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    for scanner in BROKEN_FILES:
        assert f"{scanner} " in result.stdout
    assert "FAILED" not in result.stdout


@pytest.mark.parametrize("scanner", sorted(BROKEN_FILES))
def test_scan_fails_on_a_new_finding(scanner: str, tmp_path: Path) -> None:
    name, content = BROKEN_FILES[scanner]
    result = scan(make_tree(tmp_path, {**CLEAN_FILES, name: content}), scanner)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = result.stdout[result.stdout.rindex("summary") :]
    assert f"{scanner:<13} FAILED" in summary, result.stdout


def test_scan_refuses_an_unknown_scanner() -> None:
    result = scan(ROOT, "no-such-scanner")
    assert result.returncode == 2
    assert "unknown scanner" in result.stderr
