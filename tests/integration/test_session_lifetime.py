"""Sessions end 30 days (the setting) after their login however often they are refreshed,
and housekeeping purges what can never authenticate again (issue 12, finding 8f)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.container import container_of
from app.lifespan import purge_ended_sessions_round
from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.integration.helpers import AUTH, Client, login, register, unique_name

DAY = dt.timedelta(days=1)


async def _refresh(client: Client, token: str) -> Any:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


async def _age_session(db: AsyncEngine, session_id: str, by: dt.timedelta) -> None:
    """Move a session's login into the past (what 30 days of refreshing would leave)."""
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE auth_sessions SET created_at = created_at - make_interval(secs => :seconds) WHERE id = :id"),
            {"seconds": by.total_seconds(), "id": session_id},
        )


def _session_of(tokens: dict[str, Any]) -> str:
    """The session id (the ``sid`` claim) of our own access token."""
    return str(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"])


async def test_a_session_refreshed_every_day_still_ends_after_its_maximum_age(
    settings: Settings, db_engine: AsyncEngine
) -> None:
    async with serve(create_app(settings)) as client:
        name = unique_name()
        await register(client, name)
        tokens = (await login(client, name)).json()
        session_id = _session_of(tokens)

        # 29 days in, refreshed daily: still alive, and its new refresh token expires with
        # the session (in a day), not a full refresh lifetime (14 days) from now.
        await _age_session(db_engine, session_id, 29 * DAY)
        refreshed = await _refresh(client, tokens["refresh_token"])
        assert refreshed.status_code == 200
        async with db_engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT s.created_at, t.expires_at FROM refresh_tokens t JOIN auth_sessions s "
                        "ON s.id = t.session_id WHERE t.spent_at IS NULL AND s.id = :id"
                    ),
                    {"id": session_id},
                )
            ).one()
        assert row.expires_at <= row.created_at + dt.timedelta(seconds=settings.tokens.session_max_age_seconds)

        # Past 30 days: the refresh token is refused, the owner signs in again.
        await _age_session(db_engine, session_id, 2 * DAY)
        expired = await _refresh(client, refreshed.json()["refresh_token"])
        assert expired.status_code == 401
        assert (await login(client, name)).status_code == 200


async def test_housekeeping_purges_ended_sessions_and_expired_tokens_and_counts_them(
    settings: Settings, db_engine: AsyncEngine
) -> None:
    app = create_app(settings)
    async with serve(app) as client:
        name = unique_name()
        await register(client, name)
        live = (await login(client, name)).json()
        live_rotated = (await _refresh(client, live["refresh_token"])).json()  # one spent token, one live
        logged_out = (await login(client, name)).json()
        await client.post(f"{AUTH}/logout", json={"refresh_token": logged_out["refresh_token"]})
        too_old = (await login(client, name)).json()
        live_id, logged_out_id, too_old_id = (_session_of(t) for t in (live_rotated, logged_out, too_old))
        async with db_engine.begin() as conn:
            # Ended an hour ago (past any of its access tokens), and 31 days since login.
            await conn.execute(
                text("UPDATE auth_sessions SET revoked_at = revoked_at - interval '1 hour' WHERE id = :id"),
                {"id": logged_out_id},
            )
            # The live session's spent token reached its expiry.
            await conn.execute(
                text(
                    "UPDATE refresh_tokens SET expires_at = now() - interval '1 minute' "
                    "WHERE session_id = :id AND spent_at IS NOT NULL"
                ),
                {"id": live_id},
            )
        await _age_session(db_engine, too_old_id, 31 * DAY)

        purged = await purge_ended_sessions_round(container_of(app))
        assert purged is not None
        assert purged.sessions == 2
        assert purged.refresh_tokens == 3  # the logged-out one, the too old one, the expired spent one
        async with db_engine.connect() as conn:
            sessions = (await conn.execute(text("SELECT id::text FROM auth_sessions"))).scalars().all()
        assert sessions == [live_id]
        # The live session goes on, with its live refresh token.
        assert (await _refresh(client, live_rotated["refresh_token"])).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'user_service_housekeeping_purged_total{kind="session"} 2.0' in metrics
        assert 'user_service_housekeeping_purged_total{kind="refresh_token"} 3.0' in metrics
