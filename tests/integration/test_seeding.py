"""``litestar users seed``: many users in one go, one hash per password, idempotent reruns."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import jwt
import pyotp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.identity.totp import derived_totp_secret
from app.settings import Settings
from testkit.server_process import LITESTAR_CLI
from tests.conftest import ROOT
from tests.integration.helpers import AUTH, ME, Client, bearer, login

SEED_PASSWORD = "quartz-lantern-61-meadow"


def run_seed(
    settings: Settings, signing_key_file: Path, *args: str, password: str | None = SEED_PASSWORD
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("USER_SERVICE_")},
        "USER_SERVICE_ENVIRONMENT": "test",
        "USER_SERVICE_DB__URL": settings.db.url,
        "USER_SERVICE_TOKENS__SIGNING_KEY_FILE": str(signing_key_file),
        # The same argon2 parameters as the app under test, as the load-test runner does.
        "USER_SERVICE_PASSWORDS__TIME_COST": str(settings.passwords.time_cost),
        "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": str(settings.passwords.memory_cost_kib),
        "USER_SERVICE_PASSWORDS__PARALLELISM": str(settings.passwords.parallelism),
    }
    if password is not None:
        env["USER_SERVICE_SEED_PASSWORD"] = password
    return subprocess.run(
        [*LITESTAR_CLI, "users", "seed", *args],
        cwd=ROOT,
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def seeded(db: AsyncEngine, prefix: str) -> list[tuple[str, str, str]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT username, email, password_hash FROM users WHERE username LIKE :p ORDER BY username"),
            {"p": f"{prefix}%"},
        )
        return [(r.username, r.email, r.password_hash) for r in rows]


async def test_seeded_users_log_in_and_a_rerun_adds_nothing(
    client: Client, settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    first = run_seed(settings, signing_key_file, "--count", "2500", "--prefix", "seedtest", "--batch-size", "1000")
    assert first.returncode == 0, first.stderr
    assert "2500 new, 0 already present" in first.stdout
    assert SEED_PASSWORD not in first.stdout + first.stderr
    rows = await seeded(db_engine, "seedtest")
    assert len(rows) == 2500
    assert rows[0][:2] == ("seedtest000001", "seedtest000001@loadtest.invalid")
    assert rows[-1][0] == "seedtest002500"
    assert len({password_hash for *_, password_hash in rows}) == 1  # hashed once
    assert rows[0][2].startswith(f"$argon2id$v=19$m={settings.passwords.memory_cost_kib},")

    for username in ("seedtest000001", "seedtest001234", "SEEDTEST002500", "seedtest000007@loadtest.invalid"):
        response = await login(client, username, SEED_PASSWORD)
        assert response.status_code == 200, (username, response.text)
    me = await client.get(ME, headers=bearer((await login(client, "seedtest000042", SEED_PASSWORD)).json()))
    assert me.json()["username"] == "seedtest000042"
    assert me.json()["role"] == "user"
    assert (await login(client, "seedtest000001", "not-the-seed-password")).status_code == 401

    again = run_seed(settings, signing_key_file, "--count", "3000", "--prefix", "seedtest")
    assert again.returncode == 0, again.stderr
    assert "500 new, 2500 already present" in again.stdout
    assert len(await seeded(db_engine, "seedtest")) == 3000


async def test_the_password_can_come_from_a_file(
    client: Client, settings: Settings, signing_key_file: Path, db_engine: AsyncEngine, tmp_path: Path
) -> None:
    secret = tmp_path / "seed-password"
    secret.write_text("harbor-violet-28-summit\n")
    result = run_seed(settings, signing_key_file, "--count", "3", "--prefix", "filed", "--password-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert (await login(client, "filed000003", "harbor-violet-28-summit")).status_code == 200


async def test_seeding_applies_the_password_and_username_rules(
    settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    common = run_seed(settings, signing_key_file, "--count", "5", password="password123")
    assert common.returncode != 0
    assert "password" in common.stderr
    bad_prefix = run_seed(settings, signing_key_file, "--count", "5", "--prefix", "no spaces")
    assert bad_prefix.returncode != 0
    assert "prefix" in bad_prefix.stderr
    assert await seeded(db_engine, "") == []


def test_the_password_is_never_an_argument() -> None:
    result = subprocess.run(
        [*LITESTAR_CLI, "users", "seed", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "USER_SERVICE_ENVIRONMENT": "test", "COLUMNS": "200"},
    )
    assert "--password-file" in result.stdout
    assert not re.search(r"--password(?!-file)\b", result.stdout)


async def test_seeded_second_factors_take_codes_derived_from_the_password(
    client: Client, settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    """``--with-totp``: the load generator's second step works from the shared password
    alone, and a rerun adds the factor to accounts seeded without one."""
    plain = run_seed(settings, signing_key_file, "--count", "2", "--prefix", "seedotp")
    assert plain.returncode == 0, plain.stderr
    assert (await login(client, "seedotp000001", SEED_PASSWORD)).status_code == 200

    with_totp = run_seed(settings, signing_key_file, "--count", "3", "--prefix", "seedotp", "--with-totp")
    assert with_totp.returncode == 0, with_totp.stderr
    assert "1 new, 2 already present" in with_totp.stdout
    assert "3 TOTP factors added" in with_totp.stdout

    username = "seedotp000001"
    first = await login(client, username, SEED_PASSWORD)
    assert first.status_code == 403, first.text
    token = first.json()["mfa_token"]
    someone_elses = pyotp.TOTP(derived_totp_secret(SEED_PASSWORD, "seedotp000002")).now()
    own = pyotp.TOTP(derived_totp_secret(SEED_PASSWORD, username)).now()
    if someone_elses != own:  # one in a million they coincide
        refused = await client.post(f"{AUTH}/login/mfa", json={"mfa_token": token, "code": someone_elses})
        assert refused.status_code == 401, refused.text
    done = await client.post(f"{AUTH}/login/mfa", json={"mfa_token": token, "code": own})
    assert done.status_code == 200, done.text
    assert jwt.decode(done.json()["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]

    again = run_seed(settings, signing_key_file, "--count", "3", "--prefix", "seedotp", "--with-totp")
    assert "0 TOTP factors added" in again.stdout  # a confirmed factor is never replaced
