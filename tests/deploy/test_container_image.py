"""The container image, built and run for real with podman (no Docker engine needed).

The image is built exactly as docs/deploy-image.md tells a user without registry access to
build it: deploy/container/build-image.sh --local-base (a debootstrap-built Debian bookworm
base, cached in podman's store by a hash of its script). Then the image migrates a fresh
PostgreSQL database through its own CLI and serves it as production runs it: non-root,
read-only root filesystem with a tmpfs on /tmp, no capabilities, a signing key mounted
read-only.

CONTAINER_TEST_DOCKERFILE=<path> builds another Dockerfile instead of the repository's
(with the same context): how to show that these tests catch a broken one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.identity.tokens import generate_private_key_pem
from app.identity.totp import new_key_text
from app.settings import HttpSettings, ServerSettings
from testkit.ports import free_port
from tests.deploy.artifacts import ROOT

# A cold build (debootstrap of the base, then every layer) takes minutes, and pytest-timeout
# counts the module fixture that builds into the first test's time.
pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(1200)]

CONTAINER_DIR = ROOT / "deploy" / "container"
CONTAINERS_CONF = CONTAINER_DIR / "containers.conf"
IMAGE = "localhost/user-service:test"
UID = 10001
# The service's defaults, read from the settings class rather than written here again.
DRAIN_SECONDS = HttpSettings().drain_seconds
GRACEFUL_SECONDS = ServerSettings().graceful_timeout_seconds
PASSWORD = "violet-tangerine-47-harbor"
TOOLS = ("podman", "buildah", "runc", "debootstrap")


def require_container_tools() -> None:
    """A failure, never a skip: CI must build and run the image."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: scripts/test installs Debian's podman, buildah, runc and "
            "debootstrap when it runs as root (apt-get install podman buildah runc debootstrap)"
        )


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}"
    return result


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line in pytest's output even without -s (the measured figures belong in the log)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[container image] {line}")


@dataclass(frozen=True, slots=True)
class BuiltImage:
    name: str
    config: dict[str, Any]
    # podman keeps a docker-format image's HEALTHCHECK beside Config, not in it.
    healthcheck: dict[str, Any] | None
    size: int

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> BuiltImage:
    """Built once per run; podman's layer cache makes a rebuild without changes take seconds."""
    require_container_tools()
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    command = [str(CONTAINER_DIR / "build-image.sh"), "--local-base", "--tag", IMAGE]
    if dockerfile := os.environ.get("CONTAINER_TEST_DOCKERFILE"):
        command += ["--file", dockerfile]
    started = time.monotonic()
    result = subprocess.run(
        command,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, f"image build failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    built = time.monotonic() - started
    inspected = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    if previous and previous != inspected["Id"]:
        # The last run's image, now untagged: dropped so that runs do not pile up images.
        podman("rmi", previous, check=False)
    image = BuiltImage(
        name=IMAGE,
        config=inspected["Config"],
        healthcheck=inspected.get("Healthcheck") or inspected["Config"].get("Healthcheck"),
        size=int(inspected["Size"]),
    )
    report(request, f"build step took {built:.0f} s (a cached base and cached layers are reused)")
    report(request, f"size {image.size} bytes ({image.size / 2**20:.0f} MiB)")
    return image


def test_image_runs_the_server_directly_as_a_fixed_non_root_user(image: BuiltImage) -> None:
    config = image.config
    assert config.get("User") == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["python", "-m", "app"], "exec form, so that SIGTERM reaches the server"
    assert not config.get("Cmd")
    assert config["StopSignal"] == "SIGTERM"
    assert set(config["ExposedPorts"]) == {f"{ServerSettings().port}/tcp"}
    assert image.env["USER_SERVICE_SERVER__HOST"] == "0.0.0.0"  # noqa: S104 - inside the container's network namespace
    assert image.env["USER_SERVICE_ENVIRONMENT"] == "production"
    assert image.healthcheck is not None, "no HEALTHCHECK (an OCI-format build drops it: use --format docker)"
    health = image.healthcheck["Test"]
    assert health[0] == "CMD", health
    assert "/health/live" in " ".join(health), health


def test_image_carries_its_build_identity(image: BuiltImage) -> None:
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version is not None
    labels = image.labels
    assert labels["org.opencontainers.image.version"] == version[1]
    assert labels["org.opencontainers.image.version"] == image.env["USER_SERVICE_BUILD_VERSION"]
    assert labels["org.opencontainers.image.revision"] == image.env["USER_SERVICE_BUILD_COMMIT"]
    assert "org.opencontainers.image.source" in labels
    if revision.returncode == 0:
        assert labels["org.opencontainers.image.revision"].startswith(revision.stdout.strip())
    # The same identity as a file of the root, whose content changes per revision and so keeps
    # buildah's layer cache from handing back the last build's labels (see the Dockerfile).
    release = podman(
        *("run", "--rm", "--network", "none", "--entrypoint", "python", image.name),
        *("-c", READ_FILE, "/etc/user-service-release"),
    ).stdout
    assert f"REVISION={labels['org.opencontainers.image.revision']}\n" in release, release


INSPECT_RUNTIME = """
import importlib.util, json, os, shutil, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
print(json.dumps({
    "prefix": sys.prefix,
    "tools": {name: shutil.which(name) for name in ("uv", "gcc", "cc", "make")},
    "modules": {name: importlib.util.find_spec(name) is not None
                for name in ("app", "tests", "testkit", "loadtests", "deploy", "pytest", "uv")},
    "app_from": os.path.dirname(importlib.util.find_spec("app").origin),
    "paths": {path: os.path.exists(path) for path in (
        "/src", "/opt/uv", "/opt/venv/bin/pip", "/root/.cache", "/tmp/.cache", "/app/pyproject.toml"
    )},
    "compiled": os.path.isdir(os.path.join(site, "app", "__pycache__")),
}))
"""


def test_runtime_stage_has_only_the_environment_and_the_service(image: BuiltImage) -> None:
    result = podman("run", "--rm", "--network", "none", "--entrypoint", "python", image.name, "-c", INSPECT_RUNTIME)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["prefix"] == "/opt/venv"
    # The base's own pip (the official image has one in /usr/local) is the base's business;
    # the venv has none.
    assert found["tools"] == dict.fromkeys(found["tools"]), f"build tools in the runtime image: {found['tools']}"
    assert found["modules"] == {
        "app": True,
        "tests": False,
        "testkit": False,
        "loadtests": False,
        "deploy": False,
        "pytest": False,
        "uv": False,
    }
    assert found["app_from"].startswith("/opt/venv/lib/"), "the service is installed, not copied as source"
    assert not any(found["paths"].values()), found["paths"]
    assert found["compiled"], "bytecode is compiled at build time (nothing can be written at run time)"


READ_FILE = "import sys; sys.stdout.write(open(sys.argv[1], errors='replace').read())"
# Tools an intruder would reach for, and the package managers of Debian and Python.
FORBIDDEN_PATHS = (
    *("/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", "/bin/dash", "/usr/bin/dash", "/bin/busybox"),
    *("/usr/bin/apt", "/usr/bin/apt-get", "/usr/bin/dpkg", "/usr/bin/dpkg-query", "/var/lib/dpkg/status"),
    *("/usr/bin/curl", "/usr/bin/wget", "/usr/bin/perl", "/bin/cat", "/usr/bin/env", "/bin/ls"),
    *("/usr/local/bin/pip", "/usr/local/bin/pip3", "/usr/bin/pip", "/usr/bin/pip3", "/opt/venv/bin/pip"),
)
INSPECT_CONTENTS = """
import importlib.metadata, importlib.util, json, os, sys
print(json.dumps({
    "present": [path for path in json.loads(sys.argv[1]) if os.path.lexists(path)],
    "modules": {name: importlib.util.find_spec(name) is not None for name in ("pip", "ensurepip", "setuptools")},
    "distributions": sorted({d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()}),
    "debian_packages": sorted(os.listdir("/var/lib/dpkg/status.d")),
    "copyrights": sorted(os.listdir("/usr/share/doc")),
    "files": sum(
        len(files)
        for top in ("/etc", "/lib", "/lib64", "/usr", "/opt", "/var", "/app")
        if os.path.isdir(top) and not os.path.islink(top)
        for _, _, files in os.walk(top)
    ),
}))
"""
# Packages the tests, load tests and linters use: none may reach the image.
TEST_ONLY = frozenset({"faker", "polyfactory", "pytest", "locust", "mypy", "ruff", "schemathesis", "playwright"})
MAX_SIZE_MIB = 150


def runtime_distributions() -> set[str]:
    """What uv.lock installs without the dev group, on this platform (markers applied)."""
    exported = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: set[str] = set()
    for line in exported.splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        requirement, _, marker = line.partition(";")
        if "sys_platform == 'never'" in marker or "sys_platform == 'win32'" in marker:
            continue
        names.add(re.split(r"[=<>\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_runtime_image_has_no_shell_no_package_manager_and_no_test_packages(
    image: BuiltImage, request: pytest.FixtureRequest
) -> None:
    result = podman(
        *("run", "--rm", "--network", "none", "--entrypoint", "python", image.name),
        *("-c", INSPECT_CONTENTS, json.dumps(FORBIDDEN_PATHS)),
        timeout=300,
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["present"] == [], f"in the runtime image: {found['present']}"
    assert found["modules"] == {"pip": False, "ensurepip": False, "setuptools": False}, found["modules"]
    distributions = set(found["distributions"]) - {"user-service"}
    assert not distributions & TEST_ONLY, f"test-only packages in the image: {distributions & TEST_ONLY}"
    runtime = runtime_distributions()
    assert distributions <= runtime, f"not in uv.lock's runtime set: {distributions - runtime}"
    # The Debian packages whose files were copied keep their dpkg record (for scanners) and
    # copyright file.
    assert "libc6" in found["debian_packages"], found["debian_packages"]
    assert set(found["debian_packages"]) <= set(found["copyrights"]), "a package without its copyright file"
    # No entry point can start a shell either.
    for shell in ("/bin/sh", "sh"):
        refused = podman("run", "--rm", "--network", "none", "--entrypoint", shell, image.name, "-c", "id", check=False)
        assert refused.returncode != 0, refused.stdout
    assert image.size < MAX_SIZE_MIB * 2**20, f"{image.size / 2**20:.0f} MiB"
    report(
        request,
        f"contents: {found['files']} files, {len(found['debian_packages'])} Debian packages "
        f"({', '.join(found['debian_packages'])}), {len(distributions)} Python distributions",
    )


# --- the image against PostgreSQL ---------------------------------------------------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """Readable by the container's user: the file is bind-mounted as it is on the host."""
    path = tmp_path / "signing.pem"
    path.write_bytes(generate_private_key_pem())
    path.chmod(0o444)
    return path


def production_run_options(database: str, key_file: Path, port: int) -> list[str]:
    """How production runs the image: read-only root, only /tmp writable, no capabilities."""
    return [
        *("--network", "host", "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m,mode=1777"),  # noqa: S108
        *("--cap-drop", "ALL", "--security-opt", "no-new-privileges"),
        *("-v", f"{key_file}:/run/secrets/user-service/signing.pem:ro"),
        *("-e", "USER_SERVICE_TOKENS__SIGNING_KEY_FILE=/run/secrets/user-service/signing.pem"),
        # The TOTP secrets' key, without which production refuses to start.
        *("-e", f"USER_SERVICE_MFA__ENCRYPTION_KEY={new_key_text().strip()}"),
        *("-e", f"USER_SERVICE_DB__URL={database}"),
        *("-e", f"USER_SERVICE_SERVER__PORT={port}"),
        *("-e", "USER_SERVICE_LOGGING__FORMAT=json"),
    ]


def wait_for(url: str, status: int, container: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: httpx.Response | str = "no answer"
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2)
            if last.status_code == status:
                return last
        except httpx.TransportError as error:
            last = repr(error)
        state = podman("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        assert state == "running", f"container {state}:\n{podman('logs', container, check=False).stderr}"
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer {status}: {last if isinstance(last, str) else last.text}")


def test_image_migrates_and_serves_read_only_as_non_root_and_stops_cleanly(
    image: BuiltImage, fresh_database: str, key_file: Path, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    options = production_run_options(fresh_database, key_file, port)
    name = f"user-service-test-{secrets.token_hex(4)}"
    # --health-interval=disable: no systemd timer on this machine; the check is run by hand below.
    podman("run", "-d", "--name", name, "--health-interval=disable", *options, image.name)
    try:
        # A replica on an unmigrated database is alive but neither started nor ready.
        wait_for(f"{base}/health/live", 200, name)
        assert httpx.get(f"{base}/health/startup", timeout=5).status_code == 503
        assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 503

        # The migration, as a Kubernetes Job or compose one-shot service runs it: same image,
        # same settings, another entry point.
        started = time.monotonic()
        podman(
            *("run", "--rm", *options, "--entrypoint", "litestar", image.name),
            *("--app", "app.main:create_app", "schema", "migrate"),
        )
        report(request, f"migration container ran in {time.monotonic() - started:.1f} s")
        ready = wait_for(f"{base}/health/ready", 200, name)
        assert ready.json()["status"] == "ok"

        # A register and login round trip with production's argon2 parameters.
        username = f"image{secrets.token_hex(4)}"
        with httpx.Client(base_url=base, timeout=10) as client:
            registered = client.post(
                "/api/v1/auth/register",
                json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
            )
            assert registered.status_code == 201, registered.text
            login = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
            assert login.status_code == 200, login.text
            me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
            assert me.status_code == 200, me.text
            assert me.json()["username"] == username
            metrics = client.get("/metrics").text
        commit = image.env["USER_SERVICE_BUILD_COMMIT"]
        assert re.search(rf'user_service_build_info\{{[^}}]*commit="{re.escape(commit)}"', metrics), (
            "the build identity reaches the metric"
        )

        # PID 1 is the server itself, running as the fixed non-root user (read with Python:
        # the image has no cat).
        status = podman("exec", name, "python", "-c", READ_FILE, "/proc/1/status").stdout
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.MULTILINE)
        assert uids is not None, status
        assert uids.groups() == (str(UID), str(UID)), "real and effective UID"
        cmdline = podman("exec", name, "python", "-c", READ_FILE, "/proc/1/cmdline").stdout.split("\0")
        assert cmdline[:3] == ["python", "-m", "app"], cmdline

        # Someone with a foothold in the pod finds no shell to run.
        for shell in ("sh", "/bin/sh", "bash", "/bin/bash", "/usr/bin/dash", "busybox"):
            attempt = podman("exec", name, shell, "-c", "id", check=False)
            assert attempt.returncode != 0, f"{shell} ran in the container: {attempt.stdout}"
        # glibc's allocator tuning for argon2 still applies without ldconfig or a compiler.
        tuned = [json.loads(line) for line in podman("logs", name).stdout.splitlines() if "allocator_tuned" in line]
        assert [line.get("applied") for line in tuned] == [True], tuned

        # Only /tmp is writable.
        write = "import sys; open(sys.argv[1], 'w').write('x')"
        for path in ("/app/probe", "/opt/venv/probe", "/etc/probe"):
            denied = podman("exec", name, "python", "-c", write, path, check=False)
            assert denied.returncode != 0, f"{path} is writable"
            assert "Read-only file system" in denied.stderr, denied.stderr
        podman("exec", name, "python", "-c", write, "/tmp/probe")  # noqa: S108 - the container's tmpfs

        # The image's HEALTHCHECK passes against the running server.
        podman("healthcheck", "run", name)

        # SIGTERM: drain, graceful shutdown, exit code 0, within Kubernetes' grace period.
        started = time.monotonic()
        podman("stop", "--time", str(int(DRAIN_SECONDS + GRACEFUL_SECONDS + 10)), name, timeout=90)
        stopped_after = time.monotonic() - started
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name).stdout
        assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{logs[-3000:]}"
        assert "shutdown_started" in logs, "the service saw the SIGTERM and drained"
        assert DRAIN_SECONDS <= stopped_after < DRAIN_SECONDS + GRACEFUL_SECONDS, stopped_after
        report(request, f"stopped {stopped_after:.1f} s after SIGTERM (drain {DRAIN_SECONDS:g} s), exit code 0")
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
