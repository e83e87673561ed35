"""The second factor (TOTP, RFC 6238) on real HTTP and PostgreSQL: enrolment, confirmation,
the two-step login, recovery codes, replay, expiry, the account's throttle, disabling, and
the code that sensitive changes need. Codes are computed here from the enrolment's secret
with pyotp, as an authenticator app would."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pyotp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import (
    AUTH,
    ME,
    PASSWORD,
    USERS,
    Client,
    assert_problem,
    bearer,
    login,
    make_user,
    register,
)

TOTP = f"{ME}/mfa/totp"
PROBLEMS = "https://user-service.dev/problems/"


def code(secret: str, steps: int = 0) -> str:
    """The code of the time step ``steps`` away from now (the window is one step each way)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps)


async def clear_of_a_step_edge() -> None:
    """Codes of steps -1, 0 and +1 are all good only while "now" stays in one step: a test
    that uses several waits out the last seconds of a step rather than fail on its edge."""
    left = 30 - time.time() % 30
    if left < 4:
        await asyncio.sleep(left + 0.1)


def claims(tokens: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return decoded


async def enrolled(client: Client, db: AsyncEngine) -> dict[str, Any]:
    """A signed-in user with a confirmed factor (confirmed with the code of step -1)."""
    await clear_of_a_step_edge()
    user = await make_user(client, db)
    started = await client.post(TOTP, json={"current_password": PASSWORD}, headers=user["headers"])
    assert started.status_code == 200, started.text
    secret = started.json()["secret"]
    confirmed = await client.post(f"{TOTP}/confirm", json={"code": code(secret, -1)}, headers=user["headers"])
    assert confirmed.status_code == 200, confirmed.text
    return {**user, "secret": secret, "recovery_codes": confirmed.json()["recovery_codes"]}


async def mfa_token(client: Client, username: str) -> str:
    response = await login(client, username)
    body = assert_problem(response, 403)
    assert body["type"] == PROBLEMS + "mfa-required"
    token: str = body["mfa_token"]
    return token


async def second_step(client: Client, token: str, typed: str) -> Any:
    return await client.post(f"{AUTH}/login/mfa", json={"mfa_token": token, "code": typed})


async def test_enrolment_is_pending_until_a_code_confirms_it_then_login_needs_the_code(
    client: Client, db_engine: AsyncEngine
) -> None:
    await clear_of_a_step_edge()
    user = await make_user(client, db_engine)
    wrong = await client.post(TOTP, json={"current_password": "not-the-password"}, headers=user["headers"])
    assert assert_problem(wrong, 400)["type"] == PROBLEMS + "wrong-current-password"

    started = await client.post(TOTP, json={"current_password": PASSWORD}, headers=user["headers"])
    assert started.status_code == 200, started.text
    assert started.headers["cache-control"] == "no-store"
    secret, uri = started.json()["secret"], started.json()["otpauth_uri"]
    assert uri == pyotp.TOTP(secret).provisioning_uri(name=user["username"], issuer_name="User Service")
    # Pending: the account is unchanged and a login still needs only the password.
    assert (await client.get(ME, headers=user["headers"])).json()["mfa_enabled"] is False
    assert (await login(client, user["username"])).status_code == 200

    bad = await client.post(f"{TOTP}/confirm", json={"code": code(secret, 5)}, headers=user["headers"])
    assert assert_problem(bad, 400)["type"] == PROBLEMS + "invalid-mfa-code"
    confirmed = await client.post(f"{TOTP}/confirm", json={"code": code(secret, -1)}, headers=user["headers"])
    assert confirmed.status_code == 200, confirmed.text
    recovery = confirmed.json()["recovery_codes"]
    assert len(recovery) == len(set(recovery)) == 10
    assert (await client.get(ME, headers=user["headers"])).json()["mfa_enabled"] is True

    token = await mfa_token(client, user["username"])
    wrong_code = await second_step(client, token, code(secret, 7))
    assert assert_problem(wrong_code, 401)["type"] == PROBLEMS + "invalid-mfa-code"
    # A wrong code did not spend the token.
    done = await second_step(client, token, code(secret))
    assert done.status_code == 200, done.text
    tokens = done.json()
    assert tokens["token_type"] == "bearer"
    assert claims(tokens)["amr"] == ["pwd", "otp"]
    sessions = (await client.get(f"{ME}/sessions", headers=bearer(tokens))).json()["items"]
    assert [item["amr"] for item in sessions if item["current"]] == [["pwd", "otp"]]
    # A refresh keeps how the session was authenticated.
    refreshed = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert claims(refreshed.json())["amr"] == ["pwd", "otp"]

    reused = await second_step(client, token, code(secret, 1))
    assert assert_problem(reused, 401)["type"] == PROBLEMS + "invalid-mfa-token"


async def test_the_secret_and_recovery_codes_are_not_stored_as_given(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    async with db_engine.connect() as conn:
        stored = (await conn.execute(text("SELECT secret FROM mfa_totp"))).scalar_one()
        hashes = (await conn.execute(text("SELECT code_hash FROM mfa_recovery_codes"))).scalars().all()
    assert user["secret"] not in stored
    assert stored.startswith("v1.")
    assert len(hashes) == 10
    assert not {c.replace("-", "") for c in user["recovery_codes"]} & set(hashes)
    assert all(c not in h for c in user["recovery_codes"] for h in hashes)


async def test_enrolling_again_is_409_once_on_and_replaces_a_pending_secret(
    client: Client, db_engine: AsyncEngine
) -> None:
    await clear_of_a_step_edge()
    user = await make_user(client, db_engine)
    nothing = await client.post(f"{TOTP}/confirm", json={"code": "123456"}, headers=user["headers"])
    assert assert_problem(nothing, 400)["type"] == PROBLEMS + "no-pending-enrolment"
    first = (await client.post(TOTP, json={"current_password": PASSWORD}, headers=user["headers"])).json()["secret"]
    second = (await client.post(TOTP, json={"current_password": PASSWORD}, headers=user["headers"])).json()["secret"]
    assert first != second
    stale = await client.post(f"{TOTP}/confirm", json={"code": code(first)}, headers=user["headers"])
    assert_problem(stale, 400)
    confirmed = await client.post(f"{TOTP}/confirm", json={"code": code(second)}, headers=user["headers"])
    assert confirmed.status_code == 200, confirmed.text
    again = await client.post(TOTP, json={"current_password": PASSWORD}, headers=user["headers"])
    assert assert_problem(again, 409)["type"] == PROBLEMS + "mfa-already-enabled"
    twice = await client.post(f"{TOTP}/confirm", json={"code": code(second, 1)}, headers=user["headers"])
    assert assert_problem(twice, 400)["type"] == PROBLEMS + "no-pending-enrolment"


async def test_a_code_is_accepted_once_then_only_a_later_step(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    now = code(user["secret"])
    assert (await second_step(client, await mfa_token(client, user["username"]), now)).status_code == 200
    # The same code in a new login: replayed, refused, and the new token stays good.
    token = await mfa_token(client, user["username"])
    replayed = await second_step(client, token, now)
    assert assert_problem(replayed, 401)["type"] == PROBLEMS + "invalid-mfa-code"
    # So is the code that confirmed the enrolment (an earlier step).
    assert_problem(await second_step(client, token, code(user["secret"], -1)), 401)
    assert (await second_step(client, token, code(user["secret"], 1))).status_code == 200


async def test_one_code_sent_twice_at_once_logs_in_once(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    tokens = [await mfa_token(client, user["username"]) for _ in range(2)]
    typed = code(user["secret"])
    answers = await asyncio.gather(*(second_step(client, token, typed) for token in tokens))
    assert sorted(answer.status_code for answer in answers) == [200, 401]


async def test_an_expired_mfa_token_is_refused(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    token = await mfa_token(client, user["username"])
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE mfa_challenges SET expires_at = now() - interval '1 second'"))
    expired = await second_step(client, token, code(user["secret"]))
    assert assert_problem(expired, 401)["type"] == PROBLEMS + "invalid-mfa-token"
    assert_problem(await second_step(client, "not-a-token", code(user["secret"])), 401)


async def test_a_password_change_voids_an_open_mfa_token(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    token = await mfa_token(client, user["username"])
    changed = await client.put(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": "another-long-password-42", "code": code(user["secret"])},
        headers=user["headers"],
    )
    assert changed.status_code == 204, changed.text
    assert_problem(await second_step(client, token, code(user["secret"], 1)), 401)


async def test_a_recovery_code_logs_in_once(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    recovery = user["recovery_codes"][3]
    used = await second_step(client, await mfa_token(client, user["username"]), recovery.upper())
    assert used.status_code == 200, used.text
    assert claims(used.json())["amr"] == ["pwd", "otp"]
    again = await second_step(client, await mfa_token(client, user["username"]), recovery)
    assert assert_problem(again, 401)["type"] == PROBLEMS + "invalid-mfa-code"
    other = await second_step(client, await mfa_token(client, user["username"]), user["recovery_codes"][4])
    assert other.status_code == 200, other.text
    async with db_engine.connect() as conn:
        unused = (await conn.execute(text("SELECT count(*) FROM mfa_recovery_codes WHERE used_at IS NULL"))).scalar()
    assert unused == 8


async def test_the_second_step_costs_no_password_hash(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    token = await mfa_token(client, user["username"])
    series = 'user_service_password_hash_duration_seconds_count{operation="verify"}'

    async def verifies() -> float:
        lines = (await client.get("/metrics")).text.splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.startswith(series))

    before = await verifies()
    assert (await second_step(client, token, code(user["secret"]))).status_code == 200
    assert await verifies() == before


@pytest.fixture
async def throttled(settings: Settings, signing_key_file: Path) -> AsyncIterator[Client]:
    strict = make_settings(
        settings.db.url,
        signing_key_file,
        login_throttle={"free_attempts": 2, "base_delay_seconds": 30, "max_delay_seconds": 60},
    )
    async with serve(create_app(strict)) as live:
        yield live


async def test_wrong_codes_count_against_the_account_and_end_in_429(throttled: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(throttled, db_engine)
    token = await mfa_token(throttled, user["username"])
    statuses = [(await second_step(throttled, token, f"{n:06d}")).status_code for n in range(4)]
    # Two free wrong codes, a third that starts a block, then refusals unheard.
    assert statuses[:3] == [401, 401, 401]
    blocked = await second_step(throttled, token, code(user["secret"]))
    body = assert_problem(blocked, 429)
    assert body["type"] == PROBLEMS + "mfa-codes-throttled"
    assert int(blocked.headers["Retry-After"]) > 0
    # A new login with the right password does not reset the account's count.
    fresh = await mfa_token(throttled, user["username"])
    assert_problem(await second_step(throttled, fresh, code(user["secret"])), 429)
    # The block is per account: after it, the right code still works with the same token.
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE login_throttle SET blocked_until = now() - interval '1 second'"))
    assert (await second_step(throttled, fresh, code(user["secret"]))).status_code == 200


async def test_disabling_needs_the_password_and_a_code(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    headers = user["headers"]
    wrong_code = await client.request(
        "DELETE", TOTP, json={"current_password": PASSWORD, "code": code(user["secret"], 9)}, headers=headers
    )
    assert assert_problem(wrong_code, 400)["type"] == PROBLEMS + "invalid-mfa-code"
    wrong_password = await client.request(
        "DELETE", TOTP, json={"current_password": "not-it-at-all", "code": code(user["secret"])}, headers=headers
    )
    assert assert_problem(wrong_password, 400)["type"] == PROBLEMS + "wrong-current-password"
    assert (await client.get(ME, headers=headers)).json()["mfa_enabled"] is True
    off = await client.request(
        "DELETE", TOTP, json={"current_password": PASSWORD, "code": code(user["secret"])}, headers=headers
    )
    assert off.status_code == 204, off.text
    assert (await client.get(ME, headers=headers)).json()["mfa_enabled"] is False
    again = await client.request("DELETE", TOTP, json={"current_password": PASSWORD, "code": "123456"}, headers=headers)
    assert assert_problem(again, 400)["type"] == PROBLEMS + "mfa-not-enabled"
    # Back to one step, and the factor's rows are gone.
    plain = await login(client, user["username"])
    assert plain.status_code == 200, plain.text
    assert claims(plain.json())["amr"] == ["pwd"]
    async with db_engine.connect() as conn:
        for table in ("mfa_totp", "mfa_recovery_codes", "mfa_challenges"):
            assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() == 0  # noqa: S608


async def test_a_login_without_a_factor_is_unchanged(client: Client, db_engine: AsyncEngine) -> None:
    user = await make_user(client, db_engine)
    assert claims(user["tokens"])["amr"] == ["pwd"]
    assert (await client.get(ME, headers=user["headers"])).json()["mfa_enabled"] is False
    no_factor = await client.put(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": "another-long-password-42"},
        headers=user["headers"],
    )
    assert no_factor.status_code == 204, no_factor.text


async def test_sensitive_changes_need_a_code_once_the_factor_is_on(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    headers = user["headers"]
    new_password = "another-long-password-42"
    missing = await client.put(
        f"{ME}/password", json={"current_password": PASSWORD, "new_password": new_password}, headers=headers
    )
    assert assert_problem(missing, 400)["type"] == PROBLEMS + "invalid-mfa-code"
    email = await client.post(
        f"{ME}/email", json={"new_email": "elsewhere@example.com", "current_password": PASSWORD}, headers=headers
    )
    assert assert_problem(email, 400)["type"] == PROBLEMS + "invalid-mfa-code"
    email_ok = await client.post(
        f"{ME}/email",
        json={"new_email": "elsewhere@example.com", "current_password": PASSWORD, "code": code(user["secret"])},
        headers=headers,
    )
    assert email_ok.status_code == 202, email_ok.text
    # The code just used cannot be used again (replay), a later one can.
    replayed = await client.put(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": new_password, "code": code(user["secret"])},
        headers=headers,
    )
    assert_problem(replayed, 400)
    changed = await client.put(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": new_password, "code": code(user["secret"], 1)},
        headers=headers,
    )
    assert changed.status_code == 204, changed.text


async def test_the_factors_events_are_in_the_audit_trail(client: Client, db_engine: AsyncEngine) -> None:
    user = await enrolled(client, db_engine)
    token = await mfa_token(client, user["username"])
    assert_problem(await second_step(client, token, code(user["secret"], 9)), 401)
    used = await second_step(client, token, user["recovery_codes"][0])
    assert used.status_code == 200, used.text
    await clear_of_a_step_edge()
    off = await client.request(
        "DELETE", TOTP, json={"current_password": PASSWORD, "code": code(user["secret"])}, headers=user["headers"]
    )
    assert off.status_code == 204, off.text
    await asyncio.sleep(0.2)  # a refused code's row is written after its answer
    events = await client.get(f"{ME}/events", headers=bearer(used.json()), params={"limit": 100})
    items = events.json()["items"]
    assert [i["type"] for i in items][:5] == [
        "mfa_disabled",
        "login_succeeded",
        "recovery_code_used",
        "login_failed",
        "mfa_enabled",
    ]
    assert items[1]["detail"]["amr"] == "pwd otp"
    assert items[3]["detail"] == {"reason": "wrong_mfa_code"}


async def test_an_admin_removes_a_lost_factor_the_owner_is_mailed_and_the_trail_names_the_admin(
    client: Client, db_engine: AsyncEngine
) -> None:
    user = await enrolled(client, db_engine)
    admin = await make_user(client, db_engine, role="admin")
    moderator = await make_user(client, db_engine, role="moderator")
    removal = f"{USERS}/{user['id']}/mfa/totp"
    for caller in (user, moderator):
        assert_problem(await client.delete(removal, headers=caller["headers"]), 403)
    assert_problem(await client.delete(f"{USERS}/{uuid.uuid4()}/mfa/totp", headers=admin["headers"]), 404)
    # An admin's own factor goes only with a code (DELETE /me/mfa/totp), never through here.
    own = await client.delete(f"{USERS}/{admin['id']}/mfa/totp", headers=admin["headers"])
    assert assert_problem(own, 403)["detail"].endswith("with a code.")
    opened = await mfa_token(client, user["username"])  # a login half done when the factor goes

    assert (await client.delete(removal, headers=admin["headers"])).status_code == 204

    # The password alone signs in; the half-done login and the old recovery codes are dead;
    # the owner's session goes on and can enrol a new authenticator.
    assert (await login(client, user["username"])).status_code == 200
    assert_problem(await second_step(client, opened, user["recovery_codes"][1]), 401)
    assert (await client.get(ME, headers=user["headers"])).json()["mfa_enabled"] is False
    assert (await client.post(TOTP, json={"current_password": PASSWORD}, headers=user["headers"])).status_code == 200
    again = await client.delete(removal, headers=admin["headers"])
    assert assert_problem(again, 400)["type"] == PROBLEMS + "mfa-not-enabled"
    async with db_engine.connect() as conn:
        mailed = {
            row.kind: row
            for row in await conn.execute(
                text("SELECT kind, subject, text_body, html_body FROM outbox_messages WHERE recipient = :to"),
                {"to": user["email"]},
            )
        }
        trail = (
            await conn.execute(
                text("SELECT actor_id FROM security_events WHERE user_id = :id AND type = 'mfa_disabled'"),
                {"id": user["id"]},
            )
        ).scalars()
        notice = mailed["second_factor_removed"]
        assert notice.subject == "The second factor of your account was removed"
        for body in (notice.text_body, notice.html_body):
            assert user["username"] in body
            assert "an administrator removed the second factor" in " ".join(body.split())
        assert [str(actor) for actor in trail] == [admin["id"]]


async def test_every_step_of_the_factor_works_on_the_embedded_database(signing_key_file: Path, tmp_path: Path) -> None:
    # SQLite lets one transaction write at a time: a code spent in the request's transaction
    # while the throttle settled on a connection of its own made every right code wait
    # for the lock, then answer 503 (the README's run command is this database).
    url = f"sqlite+aiosqlite:///{tmp_path}/embedded.sqlite3"
    async with serve(create_app(make_settings(url, signing_key_file))) as embedded:
        await clear_of_a_step_edge()
        assert (await register(embedded, "lonely")).status_code == 201
        headers = bearer((await login(embedded, "lonely")).json())
        secret = (await embedded.post(TOTP, json={"current_password": PASSWORD}, headers=headers)).json()["secret"]
        confirmed = await embedded.post(f"{TOTP}/confirm", json={"code": code(secret, -1)}, headers=headers)
        assert confirmed.status_code == 200, confirmed.text
        recovery = confirmed.json()["recovery_codes"]

        started = time.monotonic()
        signed_in = await second_step(embedded, await mfa_token(embedded, "lonely"), code(secret))
        assert signed_in.status_code == 200, signed_in.text
        replayed = await second_step(embedded, await mfa_token(embedded, "lonely"), code(secret))
        assert_problem(replayed, 401)
        by_recovery = await second_step(embedded, await mfa_token(embedded, "lonely"), recovery[0])
        assert by_recovery.status_code == 200, by_recovery.text
        off = await embedded.request(
            "DELETE", TOTP, json={"current_password": PASSWORD, "code": recovery[1]}, headers=headers
        )
        assert off.status_code == 204, off.text
        # Each answer came at once, none after waiting out a lock (5 s).
        assert time.monotonic() - started < 5
        assert (await login(embedded, "lonely")).status_code == 200
