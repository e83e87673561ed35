"""The periodic housekeeping round: failed-login counters nobody touched for longer than
the throttle remembers are deleted, and an unreachable database only postpones it; mails
sent or given up longer ago than the outbox's retention are deleted, pending ones never;
live sessions are counted into a gauge."""

from __future__ import annotations

import datetime as dt
import uuid

from litestar.stores.memory import MemoryStore
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from app.container import container_of
from app.identity.throttle import DatabaseThrottleStore, LoginThrottle, throttle_key
from app.lifespan import (
    count_sessions_round,
    forget_stale_abuse_state,
    purge_account_tokens_round,
    purge_mfa_challenges_round,
    purge_outbox_round,
)
from app.mail.outbox import OutgoingMail, enqueue
from app.main import create_app
from app.settings import LoginThrottleSettings, MailSettings, Settings
from testkit.live_server import serve
from tests.integration.helpers import AUTH, login, register, unique_name

POLICY = LoginThrottleSettings(forget_after_seconds=3600)


async def _entry(db: AsyncEngine, name: str, last_failure: dt.datetime) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text("INSERT INTO login_throttle (key, failures, last_failure_at) VALUES (:key, 3, :at)"),
            {"key": throttle_key(name), "at": last_failure},
        )


async def test_a_round_forgets_only_counters_older_than_the_policy(db_engine: AsyncEngine) -> None:
    now = dt.datetime.now(dt.UTC)
    await _entry(db_engine, "gave-up-long-ago", now - dt.timedelta(hours=2))
    await _entry(db_engine, "still-guessing", now - dt.timedelta(minutes=5))
    throttle = LoginThrottle(DatabaseThrottleStore(db_engine, POLICY), POLICY)

    assert await forget_stale_abuse_state(throttle, MemoryStore()) == 1
    async with db_engine.connect() as conn:
        left = (await conn.execute(text("SELECT key FROM login_throttle"))).scalars().all()
    assert left == [throttle_key("still-guessing")]
    # Nothing stale is left for the next round.
    assert await forget_stale_abuse_state(throttle, MemoryStore()) == 0


async def test_a_round_without_the_database_is_skipped_not_fatal() -> None:
    unreachable = create_async_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:9/none", connect_args={"timeout": 1}, pool_pre_ping=False
    )
    try:
        throttle = LoginThrottle(DatabaseThrottleStore(unreachable, POLICY), POLICY)
        assert await forget_stale_abuse_state(throttle, MemoryStore()) == 0
    finally:
        await unreachable.dispose()


# --- the mail outbox -------------------------------------------------------------------------


async def _mail(db: AsyncEngine, name: str, **ended: dt.datetime) -> None:
    """An outbox row written through the outbox's own enqueue, then given the end
    timestamps (``sent_at``, ``gave_up_at``) and creation time a past delivery left."""
    async with AsyncSession(db) as session, session.begin():
        row = await enqueue(
            session, OutgoingMail(kind="test_mail", recipient=f"{name}@example.test", subject=name, text_body="x"),
            MailSettings(),
        )  # fmt: skip
        for column, at in ended.items():
            setattr(row, column, at)
            row.created_at = row.next_attempt_at = min(row.created_at, at)


async def test_a_round_purges_ended_mail_past_its_retention_and_counts_it(
    settings: Settings, db_engine: AsyncEngine
) -> None:
    keep = settings.mail.keep_sent_seconds
    assert keep == 7 * 24 * 3600  # the documented default (.env.example, README)
    now = dt.datetime.now(dt.UTC)
    long_ago = now - dt.timedelta(seconds=keep) - dt.timedelta(hours=1)
    await _mail(db_engine, "sent-long-ago", sent_at=long_ago)
    await _mail(db_engine, "given-up-long-ago", gave_up_at=long_ago)
    await _mail(db_engine, "sent-recently", sent_at=now - dt.timedelta(seconds=keep) + dt.timedelta(hours=1))
    await _mail(db_engine, "given-up-recently", gave_up_at=now - dt.timedelta(minutes=5))
    # Still waiting after longer than the retention (a worker that never ran): the worker
    # gives it up first; the purge never drops mail that was not delivered or given up.
    await _mail(db_engine, "pending-long-ago")
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox_messages SET created_at = :at, next_attempt_at = :at WHERE subject = :s"),
            {"at": long_ago, "s": "pending-long-ago"},
        )

    app = create_app(settings)
    async with serve(app) as client:
        assert await purge_outbox_round(container_of(app)) == 2
        async with db_engine.connect() as conn:
            left = set((await conn.execute(text("SELECT subject FROM outbox_messages"))).scalars())
        assert left == {"sent-recently", "given-up-recently", "pending-long-ago"}
        assert await purge_outbox_round(container_of(app)) == 0  # nothing left to purge
        metrics = (await client.get("/metrics")).text
    assert 'user_service_housekeeping_purged_total{kind="outbox_message"} 2.0' in metrics


async def test_the_retention_is_the_setting(settings: Settings, db_engine: AsyncEngine) -> None:
    """A shorter KEEP_SENT_SECONDS purges what the default would keep."""
    await _mail(db_engine, "sent-an-hour-ago", sent_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    short = settings.model_copy(update={"mail": MailSettings(keep_sent_seconds=60)})
    for configured, purged in ((settings, 0), (short, 1)):
        container = container_of(create_app(configured))
        try:
            assert await purge_outbox_round(container) == purged
        finally:
            await container.database.get_engine().dispose()


async def test_a_round_purges_mailed_link_tokens_a_day_after_use_or_expiry(
    settings: Settings, db_engine: AsyncEngine
) -> None:
    app = create_app(settings)
    async with serve(app) as client:
        for name in ("kept_fresh", "kept_recent", "gone_used", "gone_expired"):
            body = {"username": name, "email": f"{name}@example.com", "password": "violet-tangerine-47-harbor"}
            assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201  # one token each
        now = dt.datetime.now(dt.UTC)
        ages = {
            "kept_recent": "used_at = :recent",
            "gone_used": "used_at = :old",
            "gone_expired": "expires_at = :old",
        }
        async with db_engine.begin() as conn:
            for name, assignment in ages.items():
                await conn.execute(
                    text(
                        f"UPDATE account_tokens SET {assignment} "  # noqa: S608 - fixed fragments
                        "WHERE user_id = (SELECT id FROM users WHERE username = :name)"
                    ),
                    {"name": name, "old": now - dt.timedelta(days=1, hours=1), "recent": now - dt.timedelta(hours=23)},
                )
        assert await purge_account_tokens_round(container_of(app)) == 2
        async with db_engine.connect() as conn:
            left = set(
                (
                    await conn.execute(text("SELECT u.username FROM account_tokens t JOIN users u ON u.id = t.user_id"))
                ).scalars()
            )
        assert left == {"kept_fresh", "kept_recent"}
        metrics = (await client.get("/metrics")).text
    assert 'user_service_housekeeping_purged_total{kind="account_token"} 2.0' in metrics


async def test_a_round_purges_second_factor_challenges_a_day_after_use_or_expiry(
    settings: Settings, db_engine: AsyncEngine
) -> None:
    # A new challenge deletes its own account's ended ones; these are the ones nothing would
    # otherwise delete: the last challenge of accounts that never log in again.
    app = create_app(settings)
    now = dt.datetime.now(dt.UTC)
    old, recent = now - dt.timedelta(days=1, hours=1), now - dt.timedelta(hours=23)
    challenges = {  # name: (expires_at, used_at)
        "pending": (now + dt.timedelta(minutes=5), None),
        "expired_recently": (recent, None),
        "used_recently": (now + dt.timedelta(minutes=5), recent),
        "expired_long_ago": (old, None),
        "used_long_ago": (old - dt.timedelta(minutes=1), old),
    }
    async with serve(app) as client:
        for name in challenges:
            body = {"username": name, "email": f"{name}@example.com", "password": "violet-tangerine-47-harbor"}
            assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
        async with db_engine.begin() as conn:
            for name, (expires_at, used_at) in challenges.items():
                await conn.execute(
                    text(
                        "INSERT INTO mfa_challenges (id, user_id, token_hash, binding, created_at, expires_at, used_at)"
                        " SELECT :id, id, :token, 'b', :created, :expires, :used FROM users WHERE username = :name"
                    ),
                    {
                        "id": uuid.uuid4(),
                        "token": name.ljust(64, "0"),
                        "created": expires_at - dt.timedelta(minutes=5),
                        "expires": expires_at,
                        "used": used_at,
                        "name": name,
                    },
                )
        assert await purge_mfa_challenges_round(container_of(app)) == 2
        async with db_engine.connect() as conn:
            left = set(
                (
                    await conn.execute(text("SELECT u.username FROM mfa_challenges c JOIN users u ON u.id = c.user_id"))
                ).scalars()
            )
        assert left == {"pending", "expired_recently", "used_recently"}
        metrics = (await client.get("/metrics")).text
    assert 'user_service_housekeeping_purged_total{kind="mfa_challenge"} 2.0' in metrics


# --- the count of live sessions ------------------------------------------------------------------


async def test_a_round_counts_sessions_neither_revoked_nor_past_their_lifetime(
    settings: Settings, db_engine: AsyncEngine
) -> None:
    app = create_app(settings)
    async with serve(app) as client:
        name = unique_name()
        assert (await register(client, name)).status_code == 201
        tokens = [(await login(client, name)).json() for _ in range(4)]
        # One logged out (revoked), one past TOKENS__SESSION_MAX_AGE_SECONDS since its login.
        await client.post(f"{AUTH}/logout", json={"refresh_token": tokens[0]["refresh_token"]})
        max_age = settings.tokens.session_max_age_seconds
        async with db_engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE auth_sessions SET created_at = now() - make_interval(secs => :age) "
                    "WHERE id = (SELECT id FROM auth_sessions WHERE revoked_at IS NULL ORDER BY created_at LIMIT 1)"
                ),
                {"age": max_age + 60},
            )
            every = (await conn.execute(text("SELECT count(*) FROM auth_sessions"))).scalar_one()
        assert every >= 4

        assert await count_sessions_round(container_of(app)) == every - 2
        metrics = (await client.get("/metrics")).text
        assert f"user_service_sessions_active {float(every - 2)}" in metrics

        # A new login shows at the next round, not before: the gauge is a periodic count.
        await login(client, name)
        assert f"user_service_sessions_active {float(every - 2)}" in (await client.get("/metrics")).text
        assert await count_sessions_round(container_of(app)) == every - 1
        assert f"user_service_sessions_active {float(every - 1)}" in (await client.get("/metrics")).text


async def test_a_count_without_the_database_is_skipped_and_keeps_the_last_value(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"db": settings.db.model_copy(update={"url": "postgresql+asyncpg://postgres@127.0.0.1:9/none"})}
    )
    container = container_of(create_app(unreachable))
    try:
        assert await count_sessions_round(container) is None
    finally:
        await container.database.get_engine().dispose()
