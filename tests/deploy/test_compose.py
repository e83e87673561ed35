"""docker-compose.yml: podman-compose accepts it, and what podman-compose does not check is
checked here against the service's own code (its settings, its measured memory, its
locked Locust), the secrets script and .env.example. Each check is also shown failing on a
deliberately broken copy. The configs it mounts: test_compose_observability.py and
test_compose_nginx.py.

Images cannot be pulled here (no registry but PyPI, Debian and npm), so the stack itself is
not started; docs/deploy-compose.md says what was run instead. The app's mail settings are
run for real: the service process, configured as the file configures it, delivers to a
plain SMTP server standing in for Mailpit.
"""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.mail.outbox import OutgoingMail, enqueue
from app.settings import HttpSettings, PasswordSettings, ServerSettings, Settings, SmtpSecurity
from testkit.server_process import ServerProcess
from testkit.smtp_server import smtp_server
from tests.deploy.artifacts import ROOT
from tests.deploy.compose_stack import (
    APP_IMAGE,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    FAKE_ENV,
    LOAD_SERVICES,
    LOCUST_CONTAINERFILE,
    LOCUST_IMAGE,
    LOCUSTFILE,
    SECRETS_SCRIPT,
    SERVICE_CONTAINERS,
    SERVICES,
    START_RSS_MIB,
    TAG_ONLY_IMAGES,
    TMPFS,
    bind_mounts,
    environment,
    podman_compose,
    require,
    resolved_compose,
    service,
)
from tests.deploy.k8s_checks import only_environment, otel_env_names, settings_env_names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved_compose()


def test_podman_compose_accepts_the_file_with_and_without_the_load_profile(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES | LOAD_SERVICES
    default = podman_compose(COMPOSE_FILE, FAKE_ENV)
    assert default.returncode == 0, default.stderr
    assert set(yaml.safe_load(default.stdout)["services"]) == SERVICES


@pytest.mark.parametrize("missing", sorted(FAKE_ENV))
def test_compose_refuses_to_start_without_a_secret(missing: str) -> None:
    result = podman_compose(COMPOSE_FILE, {k: v for k, v in FAKE_ENV.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_podman_compose_rejects_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("networks: [edge, backend]", "networks: [edge, backnd]"))
    result = podman_compose(broken, FAKE_ENV)
    assert result.returncode != 0
    assert "backnd" in result.stderr


def reference_problems(compose: dict[str, Any]) -> list[str]:
    """What podman-compose does not check itself: every depends_on, secret and image."""
    problems: list[str] = []
    services = compose["services"]
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        problems.extend(
            f"{name} depends on an undefined service {target}" for target in depends if target not in services
        )
        for secret in svc.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            if secret_name not in (compose.get("secrets") or {}):
                problems.append(f"{name} uses an undefined secret {secret_name}")
        if "image" not in svc:
            problems.append(f"{name} has no image")
    return problems


def test_every_dependency_and_secret_is_defined(compose: dict[str, Any]) -> None:
    assert reference_problems(compose) == []
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["nginx"]["secrets"] = ["tls_cert"]
    broken["services"]["grafana"]["depends_on"] = {"prometheus": {"condition": "service_started"}, "tempoo": {}}
    assert len(reference_problems(broken)) == 2


def interpolated_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def example_variables(text: str) -> set[str]:
    """Variables .env.example lists, set or commented out (``# NAME=``)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    used = interpolated_variables(COMPOSE_FILE.read_text())
    assert FAKE_ENV.keys() <= used
    missing = used - example_variables(ENV_EXAMPLE.read_text())
    assert not missing, f"add to .env.example: {sorted(missing)}"
    assert interpolated_variables("x: ${NOT_LISTED_ANYWHERE:-1}") - example_variables(ENV_EXAMPLE.read_text())


def test_every_mounted_file_exists_and_configs_live_in_deploy(compose: dict[str, Any]) -> None:
    deploy = ROOT / "deploy"
    mounts = [(name, source) for name, svc in compose["services"].items() for source, _ in bind_mounts(svc)]
    assert len(mounts) >= 9
    for name, source in mounts:
        assert source.exists(), f"{name} mounts {source}, which does not exist"
        if name.startswith("locust"):
            assert source == ROOT / "loadtests", source  # the scenarios, not a config
        else:
            assert source.is_relative_to(deploy), f"{name} mounts {source}: configs belong in deploy/"


def test_secrets_come_from_a_git_ignored_folder_the_script_fills(compose: dict[str, Any], tmp_path: Path) -> None:
    files = {name: (ROOT / spec["file"]).resolve() for name, spec in compose["secrets"].items()}
    assert {path.parent for path in files.values()} == {ROOT / ".data" / "compose"}
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(ROOT / ".data" / "compose" / "x")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, ".data/ must stay git-ignored: the secrets are written there"
    subprocess.run([str(SECRETS_SCRIPT), str(tmp_path / "s")], check=True, capture_output=True, timeout=60)
    assert {path.name for path in files.values()} == {path.name for path in (tmp_path / "s").iterdir()}


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    built_from = {APP_IMAGE: ROOT, LOCUST_IMAGE: LOCUST_CONTAINERFILE.parent}
    images = {name: str(svc["image"]) for name, svc in compose["services"].items()}
    for name, svc in compose["services"].items():
        if images[name] in built_from:
            # Built here (./Dockerfile, deploy/locust/Containerfile) by one service; the
            # others name the image it builds.
            if "build" in svc:
                assert svc["build"]["context"] == str(built_from[images[name]]), name
            continue
        image_is_pinned(name, images[name])
    [base] = re.findall(r"^FROM (\S+)$", LOCUST_CONTAINERFILE.read_text(), re.MULTILINE)
    image_is_pinned("deploy/locust/Containerfile", base.removeprefix("docker.io/"))


def image_is_pinned(name: str, image: str) -> None:
    reference, _, digest = image.partition("@")
    repository, _, tag = reference.rpartition(":")
    assert re.fullmatch(r"v?\d+(\.\d+){1,2}(-[a-z]+)?", tag), f"{name}: {image} is not pinned to a version"
    if repository not in TAG_ONLY_IMAGES:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: {image} has no digest"


def test_locust_image_is_the_locked_locust_with_the_locked_prometheus_client(compose: dict[str, Any]) -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {package["name"]: package["version"] for package in lock["package"]}
    containerfile = LOCUST_CONTAINERFILE.read_text()
    assert re.findall(r"^FROM (\S+)$", containerfile, re.MULTILINE) == [f"docker.io/locustio/locust:{locked['locust']}"]
    assert re.findall(r"pip install .*", containerfile) == [
        f"pip install --no-cache-dir --user --no-deps prometheus-client=={locked['prometheus-client']}"
    ]
    assert {service(compose, name)["image"] for name in ("locust-master", "locust-worker")} == {LOCUST_IMAGE}


# --- the service's containers ------------------------------------------------------------------


def test_the_service_reads_every_variable_compose_sets(compose: dict[str, Any]) -> None:
    known = settings_env_names() | otel_env_names()
    assert {"USER_SERVICE_DB__URL", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= known
    for name in ("app", "migrate", "loadtest-seed"):
        unknown = set(environment(service(compose, name))) - known
        # Read by a CLI command (app/cli.py), not by the settings class.
        unknown -= {"USER_SERVICE_SEED_PASSWORD"}
        assert not unknown, f"{name}: no such setting {sorted(unknown)} (app/settings.py, OpenTelemetry SDK)"


def test_service_containers_are_production_read_only_and_keyed(compose: dict[str, Any]) -> None:
    for name in ("app", "migrate", "loadtest-seed"):
        svc = service(compose, name)
        env = environment(svc)
        assert svc["image"] == APP_IMAGE
        assert env["USER_SERVICE_ENVIRONMENT"] == "production", name
        assert env["USER_SERVICE_DB__URL"].startswith(
            "postgresql+asyncpg://user_service:compose-test-password@postgres:"
        )
        secrets = svc["secrets"]
        assert env["USER_SERVICE_TOKENS__SIGNING_KEY_FILE"] in {f"/run/secrets/{secret}" for secret in secrets}, name
        assert env["USER_SERVICE_MFA__ENCRYPTION_KEY_FILE"] in {f"/run/secrets/{secret}" for secret in secrets}, name
        assert svc["read_only"] is True, name
        assert svc["tmpfs"] == [TMPFS], name
        assert svc["cap_drop"] == ["ALL"], name
    migrate = service(compose, "migrate")
    assert migrate["entrypoint"][-2:] == ["schema", "migrate"]
    assert migrate["entrypoint"][:5] == ["python", "-m", "litestar", "--app", "app.main:create_app"]


def test_app_waits_for_its_database_and_migration(compose: dict[str, Any]) -> None:
    app = service(compose, "app")
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert service(compose, "migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in service(compose, "postgres")["healthcheck"]["test"]
    port = environment(app)["USER_SERVICE_SERVER__PORT"]
    assert f"http://127.0.0.1:{port}/health/ready" in " ".join(app["healthcheck"]["test"])
    nginx = service(compose, "nginx")
    assert nginx["depends_on"]["app"]["condition"] == "service_healthy"


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_app_resources_and_shutdown_follow_the_measurements(compose: dict[str, Any]) -> None:
    app = service(compose, "app")
    env = environment(app)
    limits = app["deploy"]["resources"]["limits"]
    pool = int(env["USER_SERVICE_PASSWORDS__POOL_SIZE"])
    assert float(limits["cpus"]) == pool, "one hashing thread per CPU of the limit"
    memory = re.fullmatch(r"(\d+)M", limits["memory"])
    assert memory
    hash_mib = PasswordSettings().memory_cost_kib / 1024
    assert int(memory[1]) >= START_RSS_MIB + pool * hash_mib
    drain_and_finish = HttpSettings().drain_seconds + ServerSettings().graceful_timeout_seconds
    assert duration_seconds(app["stop_grace_period"]) > drain_and_finish


def test_only_nginx_is_reachable_from_other_machines(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            if name == "nginx":
                assert str(port) in {"443:443", "80:80"}
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the loopback"


def test_the_app_trusts_forwarding_headers_from_the_edge_network_only(compose: dict[str, Any]) -> None:
    subnet = compose["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert environment(service(compose, "app"))["USER_SERVICE_HTTP__TRUSTED_PROXIES"] == subnet
    members = {name for name, svc in compose["services"].items() if "edge" in svc.get("networks", [])}
    assert members == {"app", "nginx"}


# --- mail: the app sends to Mailpit ------------------------------------------------------------------


def _port_of(bind_address: str) -> str:
    return bind_address.rpartition(":")[2]


def _published(svc: dict[str, Any], container_port: str) -> list[tuple[str, str]]:
    """(host address, host port) of each publication of ``container_port``."""
    found = []
    for entry in svc.get("ports", []):
        parts = str(entry).split(":")
        if parts[-1] == container_port:
            found.append((parts[0] if len(parts) == 3 else "0.0.0.0", parts[-2]))  # noqa: S104 - docker's default
    return found


def mail_problems(compose: dict[str, Any]) -> list[str]:
    """Every process of the service sends its mail to the file's mail catcher, on the port
    the catcher listens on, over a network they share, in a way production accepts; the
    links in the mails start with the URL nginx publishes; the catcher's UI is published on
    the loopback alone and its SMTP port not at all."""
    services = compose["services"]
    problems: list[str] = []
    nginx_https = [port for _, port in _published(service(compose, "nginx"), "443")]
    for name in SERVICE_CONTAINERS:
        svc = service(compose, name)
        env = environment(svc)
        host = env.get("USER_SERVICE_MAIL__SMTP_HOST", "")
        if host not in services:
            problems.append(f"{name}: mail goes to {host!r}, not a service of this file (nobody would get it)")
            continue
        catcher = service(compose, host)
        listens = _port_of(environment(catcher).get("MP_SMTP_BIND_ADDR", ":1025"))
        if env.get("USER_SERVICE_MAIL__SMTP_PORT") != listens:
            problems.append(f"{name}: SMTP port {env.get('USER_SERVICE_MAIL__SMTP_PORT')}, {host} listens on {listens}")
        if not set(svc.get("networks", [])) & set(catcher.get("networks", [])):
            problems.append(f"{name}: shares no network with {host}")
        try:
            with only_environment(env):
                settings = Settings(_env_file=None)
        except ValueError as exc:
            problems.append(f"{name}: production refuses its settings: {exc}")
            continue
        # Mailpit has no certificate here: STARTTLS or TLS to it would fail every time.
        if settings.mail.smtp_security is not SmtpSecurity.NONE:
            problems.append(f"{name}: SMTP security {settings.mail.smtp_security}, the catcher speaks plain SMTP")
        link = settings.mail.link_base_url
        if (link.scheme, link.host) != ("https", "localhost") or str(link.port) not in nginx_https:
            problems.append(
                f"{name}: links start with {link}, not the URL nginx publishes (https://localhost:{nginx_https})"
            )
    mailpit = service(compose, "mailpit")
    ui = _port_of(environment(mailpit).get("MP_UI_BIND_ADDR", ":8025"))
    smtp = _port_of(environment(mailpit).get("MP_SMTP_BIND_ADDR", ":1025"))
    if [address for address, _ in _published(mailpit, ui)] != ["127.0.0.1"]:
        problems.append(f"mailpit's UI (port {ui}) is not published on the loopback alone: {mailpit.get('ports')}")
    if _published(mailpit, smtp):
        problems.append(f"mailpit's SMTP port {smtp} is published: only the app sends to it")
    return problems


def test_the_service_sends_its_mail_to_mailpit_with_links_to_nginx(compose: dict[str, Any]) -> None:
    assert mail_problems(compose) == []
    assert environment(service(compose, "app"))["USER_SERVICE_MAIL__SMTP_HOST"] == "mailpit"


def _mail_env(compose: dict[str, Any], **changes: str | None) -> dict[str, Any]:
    """A copy of the resolved file with the service containers' mail settings changed
    (None: removed)."""
    broken: dict[str, Any] = yaml.safe_load(yaml.safe_dump(compose))
    for name in SERVICE_CONTAINERS:
        env = broken["services"][name]["environment"]
        for key, value in changes.items():
            if value is None:
                env.pop(f"USER_SERVICE_MAIL__{key}", None)
            else:
                env[f"USER_SERVICE_MAIL__{key}"] = value
    return broken


@pytest.mark.parametrize(
    ("breakage", "broken"),
    [
        ("no SMTP host (mail to files in the container)", lambda c: _mail_env(c, SMTP_HOST=None)),
        ("a host that is no service", lambda c: _mail_env(c, SMTP_HOST="mailhog")),
        ("the submission port", lambda c: _mail_env(c, SMTP_PORT="587")),
        ("STARTTLS to a catcher without a certificate", lambda c: _mail_env(c, SMTP_SECURITY="starttls")),
        ("a username over plain SMTP", lambda c: _mail_env(c, SMTP_USERNAME="user")),
        ("links to the app's own port", lambda c: _mail_env(c, LINK_BASE_URL="http://app:8000")),
        ("links to another HTTPS port", lambda c: _mail_env(c, LINK_BASE_URL="https://localhost:8443")),
    ],
)
def test_mail_check_rejects_a_broken_copy(
    compose: dict[str, Any], breakage: str, broken: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    assert mail_problems(broken(compose)), breakage


def test_mail_check_rejects_mailpit_exposed_or_apart(compose: dict[str, Any]) -> None:
    for ports in (["8025:8025"], ["0.0.0.0:8025:8025"], ["127.0.0.1:8025:8025", "127.0.0.1:1025:1025"]):
        broken = yaml.safe_load(yaml.safe_dump(compose))
        broken["services"]["mailpit"]["ports"] = ports
        assert mail_problems(broken), ports
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["mailpit"]["networks"] = ["frontend"]
    assert mail_problems(broken)
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["mailpit"]["environment"]["MP_SMTP_BIND_ADDR"] = "0.0.0.0:2525"
    assert mail_problems(broken)


def test_links_follow_nginx_to_another_https_port() -> None:
    """NGINX_HTTPS_PORT in .env (rootless podman cannot bind 443) moves the links with it."""
    result = podman_compose(COMPOSE_FILE, {**FAKE_ENV, "NGINX_HTTPS_PORT": "8443"}, "--profile", "load")
    assert result.returncode == 0, result.stderr
    moved = yaml.safe_load(result.stdout)
    assert environment(service(moved, "app"))["USER_SERVICE_MAIL__LINK_BASE_URL"] == "https://localhost:8443"
    assert mail_problems(moved) == []


@pytest.mark.slow
async def test_the_app_with_composes_mail_settings_delivers_over_plain_smtp(
    compose: dict[str, Any], server_process: Callable[..., ServerProcess], db_engine: AsyncEngine
) -> None:
    """Mailpit's image cannot be pulled here: a plain SMTP server on loopback (aiosmtpd, no
    TLS, no AUTH, as Mailpit runs in the file) stands in for it, and the real service
    process runs in production mode with the app's mail settings from the file, only the
    host and port pointed at the stand-in. Production accepts them and the mail arrives."""
    mail_env = {k: v for k, v in environment(service(compose, "app")).items() if k.startswith("USER_SERVICE_MAIL__")}
    with only_environment(mail_env):
        mail = Settings(_env_file=None).mail
    with smtp_server() as catcher:
        env = {
            **mail_env,
            "USER_SERVICE_MAIL__SMTP_HOST": catcher.host,
            "USER_SERVICE_MAIL__SMTP_PORT": str(catcher.port),
            "USER_SERVICE_MAIL__POLL_INTERVAL_SECONDS": "0.1",
            "USER_SERVICE_ENVIRONMENT": "production",
            # The smallest argon2id pair OWASP lists; production refuses anything weaker.
            "USER_SERVICE_PASSWORDS__TIME_COST": "2",
            "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "19456",
        }
        server = server_process(**env).start()
        try:
            async with AsyncSession(db_engine) as session, session.begin():
                await enqueue(session, OutgoingMail("test_mail", "alice@example.test", "Hello", "Hello\n"), mail)
            received = await catcher.received_at_least(1)
        finally:
            server.stop()
    assert [m.recipients for m in received] == [["alice@example.test"]], server.output
    assert received[0].message["From"] == mail_env["USER_SERVICE_MAIL__FROM_ADDRESS"]
    assert received[0].message_id.endswith("@localhost>")  # the sender's domain
    assert '"event":"mail_not_delivered"' not in server.output


def test_mailpit_is_pinned_unprivileged_and_read_only(compose: dict[str, Any]) -> None:
    mailpit = service(compose, "mailpit")
    assert re.fullmatch(r"axllent/mailpit:v\d+\.\d+\.\d+", mailpit["image"]), mailpit["image"]
    assert mailpit["read_only"] is True
    assert mailpit["tmpfs"] == [TMPFS]  # its temporary database
    assert mailpit["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in mailpit["security_opt"]
    assert str(mailpit["user"]).split(":")[0] not in {"0", "root"}
    assert "memory" in mailpit["deploy"]["resources"]["limits"]


# --- Locust --------------------------------------------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            assert node.module
            names.add(node.module)
            # `from package import module` imports the module too.
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def module_file(name: str) -> Path | None:
    relative = Path(*name.split("."))
    for candidate in (ROOT / relative.with_suffix(".py"), ROOT / relative / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def locustfile_dependencies(locustfile: Path) -> set[str]:
    """Top-level packages outside loadtests/ that the locustfile needs, following its imports
    through loadtests/ (package __init__ files included)."""
    outside: set[str] = set()
    seen: set[Path] = set()
    todo = [locustfile]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top != "loadtests":
                outside.add(top)
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]))
                if found is not None:
                    todo.append(found)
    return outside


def locust_image_modules() -> set[str]:
    """Top-level modules the locustio/locust image has: the standard library, Locust and
    what Locust depends on (transitively, as uv.lock resolves it: the image installs the
    locked version of Locust with its dependencies), by their import names."""
    packages = {package["name"]: package for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    distributions: set[str] = set()
    todo = ["locust"]
    while todo:
        name = todo.pop()
        if name not in distributions:
            distributions.add(name)
            todo += [dependency["name"] for dependency in packages[name].get("dependencies", [])]
    installed = importlib.metadata.packages_distributions()
    canonical = {re.sub(r"[-_.]+", "-", name).lower() for name in distributions}
    modules = {
        module for module, dists in installed.items() if canonical & {re.sub(r"[-_.]+", "-", d).lower() for d in dists}
    }
    return modules | set(sys.stdlib_module_names) | {"__future__"}


def test_locust_image_has_everything_the_locustfile_imports(compose: dict[str, Any], tmp_path: Path) -> None:
    available = locust_image_modules()
    assert {"locust", "gevent", "json"} <= available
    assert not {"httpx", "app", "sqlalchemy"} & available
    outside = locustfile_dependencies(LOCUSTFILE)
    assert "locust" in outside
    missing = outside - available
    assert not missing, f"the locustio/locust image lacks {sorted(missing)}: mount or install them"
    broken = tmp_path / "locustfile.py"
    broken.write_text(LOCUSTFILE.read_text() + "\nimport httpx\nfrom app.settings import Settings\n")
    assert locustfile_dependencies(broken) - available == {"httpx", "app"}
    for name in ("locust-master", "locust-worker"):
        svc = service(compose, name)
        locustfile = Path(svc["command"][svc["command"].index("-f") + 1])
        mounted = {target: source for source, target in bind_mounts(svc)}
        assert mounted[f"{svc['working_dir']}/{locustfile.parts[0]}"] / Path(*locustfile.parts[1:]) == LOCUSTFILE
        assert environment(svc)["PYTHONPATH"] == svc["working_dir"]
    master = service(compose, "locust-master")["command"]
    assert master[master.index("--host") + 1] == "https://nginx"
    worker = service(compose, "locust-worker")["command"]
    assert worker[worker.index("--master-host") + 1] == "locust-master"


# --- the secrets script --------------------------------------------------------------------------


def test_secrets_script_passes_shellcheck() -> None:
    result = subprocess.run([require("shellcheck"), str(SECRETS_SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_secrets_script_makes_a_certificate_and_a_signing_key_once(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    subprocess.run([str(SECRETS_SCRIPT), str(folder)], check=True, capture_output=True, timeout=60)
    assert folder.stat().st_mode & 0o777 == 0o700
    first = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert set(first) == {"tls.crt", "tls.key", "jwt-signing.pem", "mfa.key"}
    assert len(base64.b64decode(first["mfa.key"])) == 32
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name  # read by the containers' own UIDs
    key = load_pem_private_key(first["jwt-signing.pem"], password=None)
    assert isinstance(key, Ed25519PrivateKey)
    san = subprocess.run(
        [require("openssl"), "x509", "-in", str(folder / "tls.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {"DNS:localhost", "DNS:nginx", "IP Address:127.0.0.1"} <= set(re.split(r",\s*|\n\s*", san))
    subprocess.run([str(SECRETS_SCRIPT), str(folder)], check=True, capture_output=True, timeout=60)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == first, "a rerun must keep the keys"
    subprocess.run([str(SECRETS_SCRIPT), "--force", str(folder)], check=True, capture_output=True, timeout=60)
    assert (folder / "jwt-signing.pem").read_bytes() != first["jwt-signing.pem"]
    # Never the TOTP secrets' key: every enrolment would become undecryptable.
    assert (folder / "mfa.key").read_bytes() == first["mfa.key"]


# Long-running services without a healthcheck, each with its reason (docker-compose.yml says
# the same beside the service).
WITHOUT_HEALTHCHECK = {
    "otel-collector": "a distroless image: no shell, no HTTP client, no probe subcommand",
    "tempo": "no probe command verified in the pinned image",
    "locust-worker": "serves nothing to probe; the master counts its workers",
}
ROTATED_LOG = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "5"}}


def test_every_service_rotates_its_log_and_has_a_memory_limit(compose: dict[str, Any]) -> None:
    """A single machine is production here: no container may fill the disk with its log or
    take the machine's memory from the others."""
    for name, svc in compose["services"].items():
        assert svc.get("logging") == ROTATED_LOG, name
        assert svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"), name


def test_every_long_running_service_has_a_healthcheck_or_a_reason(compose: dict[str, Any]) -> None:
    long_running = {name: svc for name, svc in compose["services"].items() if svc.get("restart") != "no"}
    assert set(WITHOUT_HEALTHCHECK) <= set(long_running)
    for name, svc in long_running.items():
        if name in WITHOUT_HEALTHCHECK:
            assert "healthcheck" not in svc, f"{name} has a healthcheck now: drop it from WITHOUT_HEALTHCHECK"
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        assert test[0] in {"CMD", "CMD-SHELL"}, name
    # Probes ask the port each service listens on.
    assert "127.0.0.1:9090/-/ready" in " ".join(service(compose, "prometheus")["healthcheck"]["test"])
    assert "127.0.0.1:9093/-/ready" in " ".join(service(compose, "alertmanager")["healthcheck"]["test"])
    assert "/nginx-health" in " ".join(service(compose, "nginx")["healthcheck"]["test"])
