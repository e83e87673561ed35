"""``litestar users create-admin``: the first admin, with the password never on argv."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from testkit.server_process import LITESTAR_CLI
from tests.conftest import ROOT
from tests.integration.helpers import USERS, Client, bearer, login

ADMIN_PASSWORD = "granite-orbit-55-meadow"


def run_cli(
    settings: Settings, signing_key_file: Path, *args: str, password: str | None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "USER_SERVICE_ENVIRONMENT": "test",
        "USER_SERVICE_DB__URL": settings.db.url,
        "USER_SERVICE_TOKENS__SIGNING_KEY_FILE": str(signing_key_file),
        "USER_SERVICE_PASSWORDS__TIME_COST": "1",
        "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "64",
    }
    env.pop("USER_SERVICE_ADMIN_PASSWORD", None)
    if password is not None:
        env["USER_SERVICE_ADMIN_PASSWORD"] = password
    return subprocess.run(
        [*LITESTAR_CLI, "users", "create-admin", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_create_admin_from_the_environment_can_administer(
    client: Client, settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    result = run_cli(
        settings, signing_key_file, "--username", "root_admin", "--email", "root@example.com", password=ADMIN_PASSWORD
    )
    assert result.returncode == 0, result.stderr
    assert "created admin root_admin" in result.stdout
    tokens = (await login(client, "root_admin", ADMIN_PASSWORD)).json()
    listing = await client.get(USERS, headers=bearer(tokens))
    assert listing.status_code == 200
    assert listing.json()["items"][0]["role"] == "admin"


async def test_create_admin_prompts_when_no_variable_is_set(
    client: Client, settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    typed = f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    result = run_cli(
        settings, signing_key_file, "--username", "typed_admin", "--email", "t@example.com", password=None, stdin=typed
    )
    assert result.returncode == 0, result.stderr
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    assert (await login(client, "typed_admin", ADMIN_PASSWORD)).status_code == 200


async def test_create_admin_applies_the_password_policy_and_uniqueness(
    client: Client, settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    weak = run_cli(
        settings, signing_key_file, "--username", "weak_admin", "--email", "w@example.com", password="password"
    )
    assert weak.returncode != 0
    assert "password" in weak.stderr
    ok = run_cli(
        settings, signing_key_file, "--username", "only_admin", "--email", "o@example.com", password=ADMIN_PASSWORD
    )
    assert ok.returncode == 0, ok.stderr
    again = run_cli(
        settings, signing_key_file, "--username", "ONLY_ADMIN", "--email", "o2@example.com", password=ADMIN_PASSWORD
    )
    assert again.returncode != 0
    assert "username" in again.stderr


def test_the_cli_has_no_password_option() -> None:
    result = subprocess.run(
        [*LITESTAR_CLI, "users", "create-admin", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "USER_SERVICE_ENVIRONMENT": "test"},
    )
    assert "--username" in result.stdout
    assert "--password" not in result.stdout


def test_calibrate_hashing_reports_the_login_ceiling_of_this_machine() -> None:
    """An operator sizing pods runs this on the node type: it must time argon2 at the
    configured parameters and print the ceiling that follows from the cores."""
    result = subprocess.run(
        [*LITESTAR_CLI, "users", "calibrate-hashing", "--repeat", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "USER_SERVICE_ENVIRONMENT": "test",
            "USER_SERVICE_PASSWORDS__TIME_COST": "1",
            "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "8192",
            "USER_SERVICE_PASSWORDS__POOL_SIZE": "2",
        },
    )
    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert "argon2id m=8192 KiB (8 MiB), t=1, p=1" in report
    assert "hashing pool: 2 threads" in report
    ceiling = re.search(r"login ceiling: ([0-9.]+) verifies/s = (\d+) cores / ([0-9.]+) ms CPU per verify", report)
    assert ceiling is not None, report
    per_second, cores, cpu_ms = float(ceiling[1]), int(ceiling[2]), float(ceiling[3])
    assert cores >= 1
    assert cpu_ms > 0
    # The ceiling is the cores divided by the CPU one verify costs, as the line says (the
    # report rounds the milliseconds to one decimal).
    assert per_second == pytest.approx(cores / (cpu_ms / 1000), rel=0.05)
    assert "peak hashing memory: 2 x 8 MiB = 16 MiB" in report
