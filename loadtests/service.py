"""``--start-service``: the whole service stack for a load test, so CI needs nothing running.

PostgreSQL (``LOADTEST_DATABASE_URL``, else ``TEST_DATABASE_URL``, else a throwaway server
like the test suite's), migrated by ``litestar schema migrate``; users seeded by
``litestar users seed``; an admin made by ``litestar users create-admin``; then the service
as production runs it (``python -m app``) on a free port of 127.0.0.1.

argon2 runs with the service's own defaults (``PasswordSettings``), not the test suite's
cheap parameters: a login must cost what it costs in production. So do the per-address
rate limits, which are on; the service trusts 127.0.0.1 (the load generator) as a proxy,
so that it counts each simulated client address (``X-Forwarded-For``,
``loadtests/scenarios/addresses.py``) on its own, as it does behind the ingress.
``USER_SERVICE_*`` variables in the caller's environment are passed on and win (to try
other parameters, pool sizes, limits or log levels), except the database, key, port and
environment, which are ours; so are the standard ``OTEL_*`` variables (an OTLP endpoint
set for the run sends the service's spans where Locust's go), except the service name.

A profile with ``mfa_users`` also gets that many accounts seeded ``--with-totp``
(``loadmfa000001``..., or ``LOADTEST_MFA_PREFIX``), whose codes the load generator
derives from the shared password: LoginStorm logs a share of its logins in through both
steps of the second factor.

A profile whose mix has an attack class (``CredentialStuffer``, ``PasswordSprayer``) also
gets the accounts under attack, seeded under a prefix of their own for each run (unless
``LOADTEST_TARGET_PREFIX`` names one): the login throttle remembers failures for an hour,
so a rerun on the same database would otherwise start with its targets already blocked.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.identity.tokens import generate_private_key_pem
from app.settings import PasswordSettings
from loadtests.profiles import Profile
from loadtests.scenarios.config import ATTACK_CLASSES, parse_mix
from testkit.postgres import existing_or_throwaway, migrate
from testkit.server_process import LITESTAR_CLI, ROOT, ServerProcess

OURS = {
    "USER_SERVICE_DB__URL",
    "USER_SERVICE_TOKENS__SIGNING_KEY_FILE",
    "USER_SERVICE_SERVER__PORT",
    "USER_SERVICE_ENVIRONMENT",
}
ADMIN_DEFAULT = "loadtest-admin"
CLI_TIMEOUT_SECONDS = 180


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class StartedService:
    base_url: str
    locust_env: dict[str, str]  # LOADTEST_* for the locustfile: who to log in as
    log_file: Path
    database: str


def service_env() -> dict[str, str]:
    defaults = PasswordSettings()
    env = {
        "USER_SERVICE_PASSWORDS__TIME_COST": str(defaults.time_cost),
        "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": str(defaults.memory_cost_kib),
        "USER_SERVICE_PASSWORDS__PARALLELISM": str(defaults.parallelism),
        # The limits as production has them (the test suite's server turns them off), and
        # Locust on 127.0.0.1 as the trusted proxy that names each simulated client.
        "USER_SERVICE_RATE_LIMITS__ENABLED": "true",
        "USER_SERVICE_HTTP__TRUSTED_PROXIES": "127.0.0.1",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("USER_SERVICE_") and k not in OURS})
    # An OTLP endpoint set for the run reaches the service too, so that its spans join the
    # load generator's in one trace; the service keeps its own name.
    env.update({k: v for k, v in os.environ.items() if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME"})
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LITESTAR_CLI, *args],
        cwd=ROOT,
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


@contextlib.contextmanager
def started_service(profile: Profile, report_dir: Path) -> Iterator[StartedService]:
    prefix = os.environ.get("LOADTEST_USER_PREFIX", "loadtest")
    password = os.environ.get("LOADTEST_PASSWORD") or f"lt-{secrets.token_urlsafe(18)}"
    admin = os.environ.get("LOADTEST_ADMIN_USERNAME") or ADMIN_DEFAULT
    admin_password = os.environ.get("LOADTEST_ADMIN_PASSWORD") or f"lt-{secrets.token_urlsafe(18)}"
    with contextlib.ExitStack() as stack:
        url = os.environ.get("LOADTEST_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
        database = stack.enter_context(existing_or_throwaway(url))
        keys = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loadtest-keys-")))
        (keys / "signing.pem").write_bytes(generate_private_key_pem())
        server = ServerProcess(
            database_url=database,
            signing_key_file=keys / "signing.pem",
            log_file=report_dir / "service.log",
            **service_env(),
        ).untraced()
        env = {k: v for k, v in server.env.items() if k != "USER_SERVICE_SERVER__PORT"}

        print(f"service: migrating {_safe(database)}", flush=True)
        migrate(database, env=env, timeout=CLI_TIMEOUT_SECONDS)

        _seed(env, password, prefix, profile.seed_users)
        locust_env = {
            "LOADTEST_PASSWORD": password,
            "LOADTEST_USER_PREFIX": prefix,
            "LOADTEST_USER_COUNT": str(profile.seed_users),
        }
        if profile.mfa_users:
            mfa_prefix = os.environ.get("LOADTEST_MFA_PREFIX") or "loadmfa"
            _seed(env, password, mfa_prefix, profile.mfa_users, "--with-totp")
            locust_env |= {"LOADTEST_MFA_PREFIX": mfa_prefix, "LOADTEST_MFA_COUNT": str(profile.mfa_users)}
        if has_attack(profile):
            targets = os.environ.get("LOADTEST_TARGET_PREFIX") or f"target{secrets.token_hex(3)}-"
            target_count = int(os.environ.get("LOADTEST_TARGET_COUNT", "1000"))
            _seed(env, password, targets, target_count)
            locust_env |= {"LOADTEST_TARGET_PREFIX": targets, "LOADTEST_TARGET_COUNT": str(target_count)}

        made = _cli({**env, "USER_SERVICE_ADMIN_PASSWORD": admin_password}, *admin_args(admin))
        # An admin that exists already is fine only if the caller told us its password.
        known_admin = "already registered" in made.stderr.lower() and os.environ.get("LOADTEST_ADMIN_PASSWORD")
        if made.returncode != 0 and not known_admin:
            _check(made, "litestar users create-admin (set LOADTEST_ADMIN_PASSWORD if the admin exists)")
        server.start(timeout=60)
        stack.callback(server.stop)
        print(f"service: {server.base_url} (log: {server.log_file})", flush=True)
        # For the capacity profile's CPU table (loadtests/machine.py): the service's process
        # (its children are found from it) and its /metrics (python -m app serves it there).
        watch = {
            "LOADTEST_SERVICE_PIDS": str(server.process.pid) if server.process else "",
            "LOADTEST_SERVICE_METRICS_URL": server.base_url + "/metrics",
        }
        yield StartedService(
            base_url=server.base_url,
            locust_env={
                **locust_env,
                **watch,
                "LOADTEST_ADMIN_USERNAME": admin,
                "LOADTEST_ADMIN_PASSWORD": admin_password,
            },
            log_file=server.log_file,
            database=database,
        )


def has_attack(profile: Profile) -> bool:
    """Whether the run's mix (LOADTEST_MIX wins over the profile's, as in the runner) has an attacker."""
    mix = parse_mix(os.environ.get("LOADTEST_MIX", "")) or profile.mix
    return any(mix.get(name, 0) > 0 for name in ATTACK_CLASSES)


def _seed(env: dict[str, str], password: str, prefix: str, count: int, *options: str) -> None:
    seed = _cli(
        {**env, "USER_SERVICE_SEED_PASSWORD": password},
        *("users", "seed", "--count", str(count), "--prefix", prefix, *options),
    )
    _check(seed, "litestar users seed")
    print(f"service: {seed.stdout.strip()}", flush=True)
    present = re.search(r"(\d+) already present", seed.stdout)
    if present and int(present.group(1)) and not os.environ.get("LOADTEST_PASSWORD"):
        raise ServiceError(
            f"{present.group(1)} {prefix}* users already exist in this database with a password this run does "
            "not know: set LOADTEST_PASSWORD to the one they were seeded with, or use an empty database"
        )


def admin_args(username: str) -> tuple[str, ...]:
    return ("users", "create-admin", "--username", username, "--email", f"{username}@example.com")


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise ServiceError(f"{what} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def _safe(url: str) -> str:
    """The URL without its password, for printing."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
