"""deploy/nginx/nginx.conf: Debian's nginx accepts it (and rejects broken copies), it agrees
with the service and the compose file, and it runs, as written, in front of the real
service: TLS with the certificate deploy/compose-secrets.sh makes, HTTP/2, the security
headers exactly once, the forwarding headers, the body limit, and /metrics refused in every
spelling."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from litestar.enums import ScopeType
from litestar.types import Receive, Scope, Send

from app.main import create_app
from app.settings import HttpSettings, Settings
from testkit.ports import free_port
from tests.deploy.compose_stack import (
    NGINX_CONFIG,
    SECRETS_SCRIPT,
    SECURITY_HEADERS,
    TMPFS,
    environment,
    mount_source,
    require,
    resolved_compose,
    service,
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved_compose()


# --- nginx ---------------------------------------------------------------------------------------


@dataclass
class NginxSite:
    """nginx.conf made runnable on this machine, and where it listens."""

    prefix: Path
    config: Path
    secrets: Path
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    @property
    def certificate(self) -> Path:
        return self.secrets / "tls_certificate"


def nginx_site(folder: Path, upstream_port: int, text: str | None = None) -> NginxSite:
    """A copy of nginx.conf with only what differs outside compose substituted, each
    substitution required to apply so that an edit of the file cannot silently turn this
    test into a test of something else:

    - the upstream ``app:8000`` becomes 127.0.0.1: nginx resolves upstream names when it
      loads its configuration, and no host called ``app`` exists here;
    - the compose secrets under /run/secrets/ become a throwaway certificate, made by
      deploy/compose-secrets.sh;
    - /tmp (the container's tmpfs for the pid file and temporary files) becomes a folder of
      the test's, and ports 443 and 80 become free ports on 127.0.0.1.
    """
    site = NginxSite(prefix=folder, config=folder / "nginx.conf", secrets=folder / "secrets")
    made = folder / "made"
    subprocess.run([str(SECRETS_SCRIPT), str(made)], check=True, capture_output=True, timeout=60)
    site.secrets.mkdir()
    shutil.copy(made / "tls.crt", site.certificate)
    shutil.copy(made / "tls.key", site.secrets / "tls_private_key")
    (folder / "tmp").mkdir()
    text = NGINX_CONFIG.read_text() if text is None else text
    substitutions = {
        f" {TMPFS}/": f" {folder / 'tmp'}/",
        "server app:8000;": f"server 127.0.0.1:{upstream_port};",
        " /run/secrets/": f" {site.secrets}/",
        "listen 443 ": f"listen 127.0.0.1:{site.https_port} ",
        "listen 80 default_server;": f"listen 127.0.0.1:{site.http_port} default_server;",
        "listen 80;": f"listen 127.0.0.1:{site.http_port};",
    }
    # In this order: the paths put in for the later ones may themselves be under /tmp.
    for old, new in substitutions.items():
        assert old in text, f"nginx.conf no longer contains {old!r}: update this test's substitutions"
        text = text.replace(old, new)
    site.config.write_text(text)
    return site


def nginx_test(site: NginxSite) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("nginx"), "-t", "-p", str(site.prefix), "-c", str(site.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_nginx_accepts_its_config(tmp_path: Path) -> None:
    result = nginx_test(nginx_site(tmp_path, upstream_port=free_port()))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("client_max_body_size 64k;", "client_max_body_size 64k"),  # a missing semicolon
        ("proxy_pass http://user_service;", "proxy_pass http://user_servce;"),  # an unknown upstream
        ("ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocol TLSv1.2 TLSv1.3;"),  # an unknown directive
    ],
)
def test_nginx_rejects_a_broken_copy(tmp_path: Path, old: str, new: str) -> None:
    text = NGINX_CONFIG.read_text()
    assert old in text
    result = nginx_test(nginx_site(tmp_path, upstream_port=free_port(), text=text.replace(old, new, 1)))
    assert result.returncode != 0


def test_nginx_matches_the_service_and_compose(compose: dict[str, Any]) -> None:
    text = NGINX_CONFIG.read_text()
    limit = re.search(r"client_max_body_size (\d+)k;", text)
    assert limit
    assert int(limit[1]) * 1024 == HttpSettings().max_body_bytes
    upstream = re.search(r"server app:(\d+);", text)
    assert upstream
    assert upstream[1] == environment(service(compose, "app"))["USER_SERVICE_SERVER__PORT"]
    nginx = service(compose, "nginx")
    assert mount_source(nginx, "/etc/nginx/nginx.conf") == NGINX_CONFIG
    paths = set(re.findall(r"ssl_certificate(?:_key)? (\S+);", text))
    assert paths == {f"/run/secrets/{secret}" for secret in nginx["secrets"]}
    assert nginx["tmpfs"] == [TMPFS]
    assert nginx["read_only"] is True


@dataclass
class SeenRequest:
    path: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@contextlib.asynccontextmanager
async def recording_server(settings: Settings) -> AsyncIterator[tuple[int, list[SeenRequest]]]:
    """The real app under uvicorn on 127.0.0.1, noting each request as it arrives (before the
    app, so what nginx sent is seen even where the app would change or refuse it)."""
    app = create_app(settings)
    seen: list[SeenRequest] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
            seen.append(SeenRequest(scope["path"], headers))
        await app(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(recording, lifespan="on", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()  # start-up failed: raise its error here
                await asyncio.sleep(0.02)
        yield sock.getsockname()[1], seen
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.contextmanager
def running_nginx(site: NginxSite) -> Iterator[None]:
    log = site.prefix / "nginx.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [require("nginx"), "-p", str(site.prefix), "-c", str(site.config), "-g", "daemon off;"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", site.https_port), timeout=1):
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def curl(site: NginxSite, path: str, write_out: str, *args: str) -> tuple[str, bytes]:
    """curl, for what httpx cannot do here: HTTP/2 (h2 is not installed) and paths sent as
    written (httpx removes dot segments). Returns what ``write_out`` made and the body."""
    result = await anyio.run_process(
        [
            require("curl"),
            "--silent",
            "--path-as-is",
            "--cacert",
            str(site.certificate),
            "--write-out",
            "%{stderr}" + write_out,
            # By the site's name (its SNI), on the loopback address nginx listens on here.
            "--resolve",
            f"localhost:{site.https_port}:127.0.0.1",
            *args,
            f"https://localhost:{site.https_port}{path}",
        ],
        check=False,
    )
    assert result.returncode == 0, f"curl {path}: exit {result.returncode}"
    return result.stderr.decode(), result.stdout


# Paths that mean /metrics to the app (its router ignores a trailing slash, uvicorn decodes
# %XX) or to nginx's normalisation; none may reach the app's /metrics.
METRICS_PATHS = [
    "/metrics",
    "/metrics/",
    "/metrics?format=openmetrics",
    "/%6detrics",
    "/%6Detrics/",
    "//metrics",
    "/./metrics",
    "/api/../metrics",
    "/api/%2e%2e/metrics",
    "/health/..%2fmetrics",
    "/metrics%2f",
    "/metrics/x/..",
    "/metrics%00",
    # These two reach the app (as /api//metrics), which must not take them for /metrics.
    "/api/%2fmetrics",
    "/api//metrics",
]


@pytest.fixture
def nginx_folder() -> Iterator[Path]:
    """A folder nginx's workers can enter (they run as nobody when the test runs as root,
    and pytest's own temporary folders are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="nginx-compose-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
async def test_nginx_in_front_of_the_real_service(settings: Settings, nginx_folder: Path) -> None:
    async with recording_server(settings) as (port, seen):
        site = nginx_site(nginx_folder, upstream_port=port)
        with running_nginx(site):
            await check_nginx(site, seen)


async def check_nginx(site: NginxSite, seen: list[SeenRequest]) -> None:
    tls = ssl.create_default_context(cafile=str(site.certificate))
    async with httpx.AsyncClient(base_url=f"https://localhost:{site.https_port}", verify=tls, timeout=30) as client:
        # TLS with the generated certificate (verified: its SAN names 127.0.0.1), and HTTP/2.
        live = await client.get("/health/live", headers={"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "t-1"})
        assert live.status_code == 200, live.text
        version, _ = await curl(site, "/health/live", "%{http_version} %{http_code}", "--http2")
        assert version == "2 200"

        # What the app receives: nginx's view of the client, not the client's claims.
        [request] = [r for r in seen if r.header("x-request-id") == ["t-1"]]
        assert request.header("x-forwarded-for") == ["127.0.0.1"]
        assert request.header("x-forwarded-proto") == ["https"]
        assert live.headers.get_list("x-request-id") == ["t-1"]
        odd = await client.get("/health/live", headers={"X-Request-ID": "not a sane id"})
        [generated] = odd.headers.get_list("x-request-id")
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert seen[-1].header("x-request-id") == [generated]

        # Security headers exactly once, on the app's answers and on nginx's own.
        not_found = await client.get("/metrics")
        assert not_found.status_code == 404
        for response in (live, not_found):
            for name in SECURITY_HEADERS:
                assert len(response.headers.get_list(name)) == 1, f"{name} on {response.url}: {response.headers}"
        assert "max-age=" in not_found.headers["strict-transport-security"]
        assert not_found.headers["x-content-type-options"] == "nosniff"

        # /metrics in any spelling is answered by nginx, never by the app.
        for path in METRICS_PATHS:
            status, body = await curl(site, path, "%{http_code}")
            assert status in {"400", "404"}, f"{path}: {status}"
            assert b"# TYPE" not in body, path
        reached = [r.path for r in seen if re.sub("/+", "/", r.path).rstrip("/") == "/metrics"]
        assert not reached, "a /metrics request reached the app"
        # Nor anything else the service does not offer to clients, the API description included.
        assert (await client.get("/internal")).status_code == 404
        before = len(seen)
        assert (await client.get("/schema/openapi.json")).status_code == 404
        assert len(seen) == before, "/schema reached the app"

        # Bodies: up to the app's own limit they pass, beyond it nginx refuses them itself.
        limit = HttpSettings().max_body_bytes
        at_limit = await client.post(
            "/api/v1/auth/register", content=b"x" * limit, headers={"X-Request-ID": "at-limit"}
        )
        assert at_limit.status_code not in {413, 502}, at_limit.text
        assert [r for r in seen if r.header("x-request-id") == ["at-limit"]]
        over = await client.post(
            "/api/v1/auth/register", content=b"x" * (limit + 1), headers={"X-Request-ID": "over-limit"}
        )
        assert over.status_code == 413
        assert not [r for r in seen if r.header("x-request-id") == ["over-limit"]]

        # The API works through it: register, log in, read the account.
        user = {"username": "through_nginx", "email": "through_nginx@example.com", "password": "violet-tangerine-47"}
        registered = await client.post("/api/v1/auth/register", json=user)
        assert registered.status_code == 201, registered.text
        tokens = await client.post("/api/v1/auth/login", json={k: user[k] for k in ("username", "password")})
        assert tokens.status_code == 200, tokens.text
        me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"})
        assert me.json()["username"] == "through_nginx"

        # The pages that mailed links open are routed too, with the app's own strict CSP
        # (once: nginx's fallback steps aside when the app sets one). A made-up link is the
        # app's own page saying so.
        page = await client.get("/account/verify-email", params={"token": "a-link-from-a-mail"})
        assert page.status_code == 400, page.text
        assert "This link cannot be used" in page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers.get_list("content-security-policy") == [
            "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ]

    # Plain HTTP only redirects, keeping the method (308).
    async with httpx.AsyncClient(timeout=30) as plain:
        redirect = await plain.get(f"http://127.0.0.1:{site.http_port}/health/live?x=1")
        # The container's health check, from the loopback: nginx answers it itself.
        assert (await plain.get(f"http://127.0.0.1:{site.http_port}/nginx-health")).status_code == 204
        # Any other host name: the connection is closed without an answer.
        with pytest.raises(httpx.RemoteProtocolError):
            await plain.get(f"http://127.0.0.1:{site.http_port}/health/live", headers={"Host": "attacker.example"})
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "https://127.0.0.1/health/live?x=1"
    # HTTPS for another name, or for the bare address (no SNI): the handshake is refused,
    # before any certificate is shown.
    for url, resolve in (
        (f"https://attacker.example:{site.https_port}/health/live", f"attacker.example:{site.https_port}:127.0.0.1"),
        (f"https://127.0.0.1:{site.https_port}/health/live", None),
    ):
        refused = await anyio.run_process(
            [require("curl"), "--silent", "--insecure", *(("--resolve", resolve) if resolve else ()), url], check=False
        )
        assert refused.returncode == 35, f"{url}: curl exit {refused.returncode} (35: TLS handshake refused)"
