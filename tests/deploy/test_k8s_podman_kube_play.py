"""The dev overlay's rendered Deployment, run by `podman kube play` from the image that
tests/deploy/test_container_image.py builds, on the test PostgreSQL."""

from __future__ import annotations

import copy
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from app.identity.tokens import generate_private_key_pem
from app.identity.totp import new_key_text
from testkit.ports import free_port
from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj


def for_podman(objs: list[Obj], database_url: str, key_dir: Path, port: int, metrics_port: int) -> list[Obj]:
    """The dev overlay's server Deployment and ConfigMap, changed only where podman 4.3's
    `kube play` cannot follow Kubernetes (each change says why); everything else (image
    entry point, envFrom, probes, securityContext, read-only root, /tmp emptyDir, the key
    mounted where the ConfigMap says) runs as rendered."""
    deployment = copy.deepcopy(checks.server(objs))
    pod = checks.pod_spec(deployment)
    spec = pod["containers"][0]
    (configmap_name,) = [s["configMapRef"]["name"] for s in spec["envFrom"]]
    configmap = copy.deepcopy(checks.one(objs, "ConfigMap", configmap_name))
    # Host networking, to reach the test PostgreSQL on 127.0.0.1; podman then refuses port
    # mappings, so the named port goes and the probes name its number.
    pod["hostNetwork"] = True
    configmap["data"]["USER_SERVICE_SERVER__PORT"] = str(port)
    configmap["data"]["USER_SERVICE_METRICS__PORT"] = str(metrics_port)  # 9090 may be taken on the host
    configmap["data"]["USER_SERVICE_SERVER__PROXY_PORT"] = str(free_port())  # and 8001
    spec.pop("ports")
    for probe in checks.PROBES:
        spec[probe]["httpGet"]["port"] = port
    # Secrets: podman 4.3 crashes (nil pointer in VolumeFromSecret) on secret volumes and
    # has no Secret kind, so the key comes from a host folder and the URL as a value.
    for volume in pod["volumes"]:
        if "secret" in volume:
            del volume["secret"]
            volume["hostPath"] = {"path": str(key_dir), "type": "Directory"}
    # Only the server's pod is played, not the shared Redis: without USER_SERVICE_REDIS_URL
    # the service counts rate limits in memory and the throttle in PostgreSQL (what it
    # also falls back to when Redis is away; tests/integration/test_shared_store_outage.py).
    spec["env"] = [{"name": "USER_SERVICE_DB__URL", "value": database_url}]
    # podman's kube play does not create a missing working directory on a read-only root
    # (`podman run` and Kubernetes' runtimes do), and a buildah-built image has no /app.
    spec["workingDir"] = "/tmp"  # noqa: S108 - the pod's writable emptyDir
    return [configmap, deployment]


@pytest.mark.container
@pytest.mark.slow
def test_the_rendered_deployment_runs_under_podman_kube_play(
    rendered: dict[str, list[Obj]], migrated_database: str, tmp_path: Path
) -> None:
    from tests.deploy.test_container_image import CONTAINERS_CONF, IMAGE, UID, podman

    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: tests/deploy/test_container_image.py builds it (run it first)")
    key_dir = tmp_path / "jwt"
    key_dir.mkdir()
    (key_dir / "signing.pem").write_bytes(generate_private_key_pem())
    (key_dir / "signing.pem").chmod(0o444)
    # Every secret volume becomes this folder (for_podman): the TOTP key lies beside the signing key.
    (key_dir / "mfa.key").write_text(new_key_text())
    (key_dir / "mfa.key").chmod(0o444)
    port, metrics_port = free_port(), free_port()
    objs = for_podman(rendered["overlays/dev"], migrated_database, key_dir, port, metrics_port)
    checks.pod_spec(objs[1])["containers"][0]["image"] = IMAGE
    manifest = tmp_path / "user-service.yaml"
    manifest.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    assert CONTAINERS_CONF.is_file()
    podman("kube", "play", "--network", "host", str(manifest), timeout=180)
    try:
        (container,) = podman("ps", "--filter", "pod=user-service-pod-0", "--format", "{{.Names}}").stdout.split()[-1:]
        base = f"http://127.0.0.1:{port}"
        ready = _wait_ready(f"{base}/health/ready", podman, container)
        assert ready["checks"] == {"startup": "ok", "draining": "ok", "database": "ok"}
        password, username = "violet-tangerine-47-harbor", f"kube{secrets.token_hex(4)}"
        with httpx.Client(base_url=base, timeout=15) as client:
            email = f"{username}@example.com"
            created = client.post(
                "/api/v1/auth/register", json={"username": username, "email": email, "password": password}
            )
            assert created.status_code == 201, created.text
            login = client.post("/api/v1/auth/login", json={"username": username, "password": password})
            assert login.status_code == 200, login.text
            # /metrics only on the metrics port, as the manifests configure it.
            assert client.get("/metrics").status_code == 404
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=15)
            assert 'user_service_login_attempts_total{result="success"} 1.0' in scraped.text, scraped.text[:500]
        inspected = podman("inspect", container, "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}").stdout
        assert inspected.split() == ["true", f"{UID}:{UID}"], inspected
        assert podman("exec", container, "python", "-c", "import os; print(os.getuid())").stdout.strip() == str(UID)
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)


def _wait_ready(url: str, podman: Callable[..., subprocess.CompletedProcess[str]], container: str) -> Obj:
    deadline = time.monotonic() + 90
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=3)
            if response.status_code == 200:
                body: Obj = response.json()
                return body
            last = response.text
        except httpx.TransportError as error:
            last = repr(error)
        state = podman("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state not in {"running", "created"}:
            break  # exited: the logs say why
        time.sleep(0.5)
    logs = podman("logs", container, check=False)
    raise AssertionError(f"{url} never became ready: {last}\n{logs.stdout}{logs.stderr}")
