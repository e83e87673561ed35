"""The auth_sessions and refresh_tokens tables: login sessions and their refresh-token
families (start, rotate, revoke), and the housekeeping that purges what has ended.
Nothing in LoginSessions commits; the use case does.

A session has an absolute lifetime (``TokenSettings.session_max_age_seconds``) counted
from its login, however often it is refreshed: a stolen refresh token, used before its
owner's, cannot keep a session alive for ever. The end is computed from ``created_at``, so
lowering the setting shortens live sessions too."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from uuid_utils.compat import uuid7

from app.db.dialects import upsertable_insert
from app.db.models import AuthSession, KnownClient, RefreshToken, User, utcnow
from app.identity.tokens import hash_refresh_token, new_refresh_token


class RevokeReason(StrEnum):
    LOGOUT = "logout"
    REUSE = "refresh_reuse"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 - a revocation reason
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a revocation reason
    DEACTIVATED = "deactivated"
    DELETED = "deleted"
    ENDED_BY_USER = "ended_by_user"
    ENDED_BY_ADMIN = "ended_by_admin"


USER_AGENT_MAX = 256


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is on the other end of a login or refresh: the client address (already resolved
    through the trusted-proxy logic, app/web/client_address.py) and the User-Agent, cut to
    what a session list shows."""

    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None) -> ClientInfo:
        agent = "".join(c for c in user_agent if c.isprintable())[:USER_AGENT_MAX] if user_agent else None
        return cls(ip=ip[:64] if ip else None, user_agent=agent or None)

    def digest(self) -> str:
        """The pair as a known_clients key: a digest, never the address itself."""
        raw = f"{self.ip or ''}\0{self.user_agent or ''}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionView:
    """A live session as its owner (or an admin) sees it."""

    id: UUID
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    ip: str | None
    user_agent: str | None
    amr: list[str]


class RotationOutcome(StrEnum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"
    USER_INACTIVE = "user_inactive"


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: RotationOutcome
    user: User | None = None
    session_id: UUID | None = None
    refresh_token: str | None = None
    amr: tuple[str, ...] = ("pwd",)


def _refusal(
    token: RefreshToken, session: AuthSession, user: User, now: dt.datetime, session_ends_at: dt.datetime
) -> RotationOutcome | None:
    """Why this token cannot rotate, checked in order of severity; None if it can."""
    if session.revoked_at is not None:
        return RotationOutcome.REVOKED
    if token.spent_at is not None:
        return RotationOutcome.REUSED
    if token.expires_at <= now or session_ends_at <= now:
        return RotationOutcome.EXPIRED
    if not user.can_authenticate:
        return RotationOutcome.USER_INACTIVE
    return None


class LoginSessions:
    def __init__(self, db: AsyncSession, refresh_ttl_seconds: int, session_max_age_seconds: int) -> None:
        self._db = db
        self._refresh_ttl = dt.timedelta(seconds=refresh_ttl_seconds)
        self._max_age = dt.timedelta(seconds=session_max_age_seconds)

    async def start(self, user_id: UUID, client: ClientInfo, amr: tuple[str, ...] = ("pwd",)) -> tuple[UUID, str]:
        """A new session for the user and the first refresh token of its family, written
        in one flush (the session's id is made here, not by the database)."""
        session_id = uuid7()
        now = utcnow()
        self._db.add(
            AuthSession(
                id=session_id,
                user_id=user_id,
                created_at=now,
                last_used_at=now,
                ip=client.ip,
                user_agent=client.user_agent,
                amr=" ".join(amr),
            )
        )
        return session_id, await self._issue(session_id, now + self._max_age)

    async def live_of(self, user_id: UUID) -> list[SessionView]:
        """The user's sessions that can still be refreshed, newest first."""
        now = utcnow()
        statement = (
            select(AuthSession)
            .where(
                AuthSession.user_id == user_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.created_at > now - self._max_age,
            )
            .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
        )
        views = []
        for session in (await self._db.execute(statement)).scalars():
            last_used = session.last_used_at or session.created_at
            # It ends at its absolute lifetime, or earlier if its refresh token (valid for
            # the refresh lifetime from its last use) is not used in time.
            expires_at = min(session.created_at + self._max_age, last_used + self._refresh_ttl)
            if expires_at <= now:
                continue
            views.append(
                SessionView(
                    id=session.id,
                    created_at=session.created_at,
                    last_used_at=last_used,
                    expires_at=expires_at,
                    ip=session.ip,
                    user_agent=session.user_agent,
                    amr=session.amr.split(),
                )
            )
        return views

    async def revoke_of(self, user_id: UUID, session_id: UUID, reason: RevokeReason) -> bool:
        """End one session of this user; False when it is not theirs or already over (the
        caller answers 404 either way: another user's session ids are not confirmed)."""
        result = await self._db.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason.value)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def is_new_client(self, user_id: UUID, client: ClientInfo, remember_days: int) -> bool:
        """Record that ``user_id`` logged in from ``client``; True when the pair was not
        seen within ``remember_days`` and the account has logged in from somewhere before
        (its very first login is no news to its owner)."""
        now = utcnow()
        digest = client.digest()
        # One row whatever the number of clients remembered: how many, and when this one
        # was last seen (NULL if never).
        known, this_seen = (
            await self._db.execute(
                select(
                    func.count(),
                    func.max(case((KnownClient.client_hash == digest, KnownClient.last_seen_at))),
                ).where(KnownClient.user_id == user_id)
            )
        ).one()
        # An upsert: two concurrent first logins from one client must not collide on the
        # key (both may send a notice, which is harmless).
        bind = self._db.get_bind()
        upsert = upsertable_insert(bind.dialect.name, KnownClient).values(
            user_id=user_id, client_hash=digest, last_seen_at=now
        )
        await self._db.execute(
            upsert.on_conflict_do_update(
                index_elements=[KnownClient.user_id, KnownClient.client_hash], set_={"last_seen_at": now}
            )
        )
        recent = now - dt.timedelta(days=remember_days)
        return known > 0 and not (this_seen is not None and this_seen > recent)

    async def rotate(self, presented: str, client: ClientInfo | None = None) -> Rotation:
        """Spend ``presented`` and issue its successor; a second use revokes the whole family.

        Spending is a compare-and-set (``UPDATE ... WHERE spent_at IS NULL``), so of two
        concurrent uses exactly one rotates and the other is a reuse, on PostgreSQL (where
        the second UPDATE waits for the first to commit, then matches no row) and on SQLite
        (which has no FOR UPDATE) alike.
        """
        statement = (
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, RefreshToken.session_id == AuthSession.id)
            .join(User, AuthSession.user_id == User.id)
            .where(RefreshToken.token_hash == hash_refresh_token(presented))
        )
        row = (await self._db.execute(statement)).one_or_none()
        if row is None:
            return Rotation(RotationOutcome.UNKNOWN)
        token, session, user = row
        now = utcnow()
        session_ends_at = session.created_at + self._max_age
        outcome = _refusal(token, session, user, now, session_ends_at)
        if outcome is None:
            spent = await self._db.execute(
                update(RefreshToken)
                .where(RefreshToken.id == token.id, RefreshToken.spent_at.is_(None))
                .values(spent_at=now)
                .execution_options(synchronize_session=False)
            )
            # No row changed: a concurrent request spent it first, so this one is a reuse.
            outcome = RotationOutcome.ROTATED if spent.rowcount == 1 else RotationOutcome.REUSED  # type: ignore[attr-defined]
        if outcome is RotationOutcome.REUSED:
            await self.revoke(session.id, RevokeReason.REUSE)
        if outcome is RotationOutcome.ROTATED and client is not None:
            # The session's row, as its list shows it, follows its client.
            await self._db.execute(
                update(AuthSession)
                .where(AuthSession.id == session.id)
                .values(last_used_at=now, ip=client.ip, user_agent=client.user_agent)
                .execution_options(synchronize_session=False)
            )
        successor = await self._issue(session.id, session_ends_at) if outcome is RotationOutcome.ROTATED else None
        return Rotation(
            outcome, user=user, session_id=session.id, refresh_token=successor, amr=tuple(session.amr.split())
        )

    async def find_session_of(self, presented: str) -> tuple[UUID, UUID] | None:
        """The session the refresh token belongs to, and its user."""
        statement = (
            select(AuthSession.id, AuthSession.user_id)
            .join(RefreshToken, RefreshToken.session_id == AuthSession.id)
            .where(RefreshToken.token_hash == hash_refresh_token(presented))
        )
        row = (await self._db.execute(statement)).one_or_none()
        return (row[0], row[1]) if row else None

    async def revoke(self, session_id: UUID, reason: RevokeReason) -> bool:
        """End the session; False when it had already ended (nothing changed)."""
        result = await self._db.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason.value)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def revoke_all_of(self, user_id: UUID, reason: RevokeReason, *, keep: UUID | None = None) -> None:
        """End every live session of a user, except ``keep`` (the caller's own, after a password change)."""
        statement = (
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason.value)
        )
        if keep is not None:
            statement = statement.where(AuthSession.id != keep)
        await self._db.execute(statement)

    async def _issue(self, session_id: UUID, session_ends_at: dt.datetime) -> str:
        """A refresh token that expires after its own lifetime, or when its session ends."""
        token, digest = new_refresh_token()
        expires_at = min(utcnow() + self._refresh_ttl, session_ends_at)
        self._db.add(RefreshToken(session_id=session_id, token_hash=digest, expires_at=expires_at))
        await self._db.flush()
        return token


@dataclass(frozen=True, slots=True)
class Purged:
    sessions: int
    refresh_tokens: int


async def purge_ended_sessions(
    engine: AsyncEngine, *, now: dt.datetime, session_max_age_seconds: int, keep_ended_for_seconds: int
) -> Purged:
    """Delete what can never authenticate again, so the tables do not grow with every login
    and rotation for ever:

    - sessions that ended (revoked, or past their absolute lifetime) more than
      ``keep_ended_for_seconds`` ago, with their tokens: by then no access token of theirs
      is alive, and a missing session refuses its tokens just as a revoked one does;
    - refresh tokens, spent or not, past their own expiry. A spent one is kept until then
      because presenting it again is how reuse is detected; after its expiry a replay is
      refused as unknown instead, and no longer revokes the family (it could not rotate
      anyway).
    """
    keep = dt.timedelta(seconds=keep_ended_for_seconds)
    ended = select(AuthSession.id).where(
        or_(
            AuthSession.revoked_at < now - keep,
            AuthSession.created_at < now - dt.timedelta(seconds=session_max_age_seconds) - keep,
        )
    )
    async with engine.begin() as conn:
        # Tokens first and by hand: SQLite enforces ON DELETE CASCADE only with a pragma.
        tokens_of_ended = await conn.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(ended)))
        sessions = await conn.execute(delete(AuthSession).where(AuthSession.id.in_(ended)))
        expired = await conn.execute(delete(RefreshToken).where(RefreshToken.expires_at < now))
    return Purged(
        sessions=sessions.rowcount or 0,
        refresh_tokens=(tokens_of_ended.rowcount or 0) + (expired.rowcount or 0),
    )


async def forget_known_clients(engine: AsyncEngine, *, seen_before: dt.datetime) -> int:
    """Housekeeping: client pairs an account has not logged in from since ``seen_before``
    are forgotten (a login from one of them is news again)."""
    async with engine.begin() as conn:
        result = await conn.execute(delete(KnownClient).where(KnownClient.last_seen_at < seen_before))
    return int(result.rowcount or 0)
