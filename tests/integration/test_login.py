"""POST /api/v1/auth/login: tokens, enumeration resistance, rehash, shedding, event-loop health."""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher as Argon2
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.container import container_of
from app.identity.passwords import HashTiming, PasswordHasher
from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import ME, PASSWORD, Client, assert_problem, bearer, login, register


def _b64_json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return _b64_json(header), _b64_json(payload)


async def set_column(db: AsyncEngine, username: str, assignment: str) -> None:
    async with db.begin() as conn:
        await conn.execute(text(f"UPDATE users SET {assignment} WHERE username = :u"), {"u": username})  # noqa: S608


async def test_login_returns_a_token_pair_with_the_documented_claims(client: Client) -> None:
    user = (await register(client, "claims_user")).json()
    response = await login(client, "claims_user")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    header, claims = jwt_parts(body["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    assert claims["sub"] == user["id"]
    assert claims["role"] == "user"
    assert {"sid", "iat", "exp", "iss", "aud", "jti"} <= claims.keys()
    assert claims["exp"] - claims["iat"] == 900
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}


async def test_login_accepts_the_email_in_any_case(client: Client) -> None:
    await register(client, "mail_login", email="Mail.Login@Example.com")
    assert (await login(client, "mail.login@EXAMPLE.com")).status_code == 200
    assert (await login(client, "MAIL_LOGIN")).status_code == 200


async def test_each_login_starts_its_own_session(client: Client) -> None:
    await register(client, "two_devices")
    first, second = (await login(client, "two_devices")).json(), (await login(client, "two_devices")).json()
    assert jwt_parts(first["access_token"])[1]["sid"] != jwt_parts(second["access_token"])[1]["sid"]
    assert first["refresh_token"] != second["refresh_token"]


async def test_unknown_user_wrong_password_and_inactive_user_look_identical(
    client: Client, db_engine: AsyncEngine
) -> None:
    await register(client, "present")
    await register(client, "dormant")
    await set_column(db_engine, "dormant", "is_active = false")
    await register(client, "removed")
    await set_column(db_engine, "removed", "deleted_at = now(), is_active = false")
    verifies: list[str] = []
    hasher: PasswordHasher = container_of(client.app).hasher
    hasher.observers.append(lambda operation, _timing: verifies.append(operation))

    responses = [
        await login(client, "nobody_here"),
        await login(client, "present", "wrong-password-123"),
        await login(client, "dormant"),
        await login(client, "removed"),
    ]

    bodies = [assert_problem(r, 401) for r in responses]
    assert all(body == bodies[0] for body in bodies)
    assert {tuple(sorted(r.headers.keys())) for r in responses} == {tuple(sorted(responses[0].headers.keys()))}
    # Same hash work in every case: exactly one argon2 verify each, no more, no less.
    assert verifies == ["verify"] * 4


async def test_a_dead_account_with_the_right_password_costs_what_a_wrong_password_costs(
    client: Client, db_engine: AsyncEngine
) -> None:
    """Finding 8 of #12: refusing a deactivated or deleted account whose password was right
    took one more (locked) read than refusing a wrong password, about 3 ms that told an
    attacker the password was right. The two refusals must run the same statements."""
    for name in ("alive", "dormant_one", "removed_one"):
        await register(client, name)
    await set_column(db_engine, "dormant_one", "is_active = false")
    await set_column(db_engine, "removed_one", "deleted_at = now(), is_active = false")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    engine = container_of(client.app).database.get_engine().sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        runs: dict[str, list[str]] = {}
        for name, password in (("alive", "wrong-password-123"), ("dormant_one", PASSWORD), ("removed_one", PASSWORD)):
            statements.clear()
            assert_problem(await login(client, name, password), 401)
            runs[name] = list(statements)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert runs["dormant_one"] == runs["alive"], runs
    assert runs["removed_one"] == runs["alive"], runs
    assert not any("FOR SHARE" in statement for statement in runs["alive"])


async def test_outdated_hash_parameters_are_upgraded_at_login(
    settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    async with serve(create_app(settings)) as old_client:
        await register(old_client, "upgrader")
    async with db_engine.connect() as conn:
        query = text("SELECT password_hash FROM users WHERE username = 'upgrader'")
        before = (await conn.execute(query)).scalar_one()
    assert "t=1" in before

    stronger = make_settings(str(settings.db.url), signing_key_file, passwords={"time_cost": 2, "memory_cost_kib": 128})
    async with serve(create_app(stronger)) as new_client:
        assert (await login(new_client, "upgrader")).status_code == 200
        async with db_engine.connect() as conn:
            after = (await conn.execute(query)).scalar_one()
        assert after != before
        assert "m=128,t=2" in after
        assert not Argon2(time_cost=2, memory_cost=128, parallelism=1).check_needs_rehash(after)
        # The upgraded hash is a real hash of the same password.
        assert (await login(new_client, "upgrader")).status_code == 200
        assert_problem(await login(new_client, "upgrader", "not-the-password"), 401)


async def test_weaker_parameters_never_rewrite_a_stronger_hash(
    settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    """Finding 5 of #12: a service started with weaker argon2 parameters logs people in but
    leaves their stronger hashes as they are (rehashing only ever upgrades)."""
    stronger = make_settings(str(settings.db.url), signing_key_file, passwords={"time_cost": 2, "memory_cost_kib": 128})
    async with serve(create_app(stronger)) as strong_client:
        await register(strong_client, "keeper")
    query = text("SELECT password_hash FROM users WHERE username = 'keeper'")
    async with db_engine.connect() as conn:
        before = (await conn.execute(query)).scalar_one()
    assert "m=128,t=2" in before

    async with serve(create_app(settings)) as weak_client:  # the suite's m=64, t=1
        assert (await login(weak_client, "keeper")).status_code == 200
    async with db_engine.connect() as conn:
        assert (await conn.execute(query)).scalar_one() == before


async def test_a_full_hashing_queue_sheds_with_503_and_retry_after(
    settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    slow = make_settings(
        str(settings.db.url),
        signing_key_file,
        passwords={
            "time_cost": 3,
            "memory_cost_kib": 32_768,
            "pool_size": 1,
            "queue_size": 1,
            "retry_after_seconds": 2,
        },
    )
    async with serve(create_app(slow)) as client:
        await register(client, "crowd")
        responses = await asyncio.gather(*(login(client, "crowd") for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 1
    assert statuses.count(503) >= 5
    for shed in (r for r in responses if r.status_code == 503):
        assert shed.headers["retry-after"] == "2"
        assert assert_problem(shed, 503)["type"].endswith("/hashing-capacity-exceeded")


async def _probe_lag(stop: asyncio.Event, samples: list[float], interval: float = 0.002) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(interval)
        samples.append(time.perf_counter() - started - interval)


async def test_hashing_never_blocks_the_event_loop(
    settings: Settings, signing_key_file: Path, db_engine: AsyncEngine
) -> None:
    params = {"time_cost": 3, "memory_cost_kib": 32_768, "parallelism": 1}
    # One worker: the other core stays free for the event loop, as in production.
    heavy = make_settings(
        str(settings.db.url), signing_key_file, passwords={**params, "pool_size": 1, "queue_size": 64}
    )
    reference = Argon2(time_cost=3, memory_cost=32_768, parallelism=1)
    reference_hash = reference.hash(PASSWORD)

    # Control: the probe must notice a hash that does run on the loop, or it proves nothing.
    stop, blocked = asyncio.Event(), list[float]()
    probe = asyncio.create_task(_probe_lag(stop, blocked))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    reference.verify(reference_hash, PASSWORD)
    one_verify = time.perf_counter() - started
    await asyncio.sleep(0.01)
    stop.set()
    await probe
    assert max(blocked) > 0.5 * one_verify

    timings: list[HashTiming] = []
    async with serve(create_app(heavy)) as client:
        await register(client, "busy_bee")
        hasher: PasswordHasher = container_of(client.app).hasher
        hasher.observers.append(lambda _op, timing: timings.append(timing))
        stop, lags = asyncio.Event(), list[float]()
        probe = asyncio.create_task(_probe_lag(stop, lags))
        responses = await asyncio.gather(*(login(client, "busy_bee") for _ in range(8)))
        stop.set()
        await probe
    assert all(r.status_code == 200 for r in responses)
    assert len(timings) == 8
    typical_hash = statistics.median(t.run_seconds for t in timings)
    # While eight hashes ran back to back, the loop kept ticking: its worst stall stays
    # well under the time of one hash (it would be at least one hash if hashing ran on it).
    assert max(lags) < 0.5 * typical_hash, (max(lags), typical_hash)


async def test_a_token_from_login_opens_the_account(client: Client) -> None:
    await register(client, "door")
    tokens = (await login(client, "door")).json()
    assert (await client.get(ME, headers=bearer(tokens))).json()["username"] == "door"
