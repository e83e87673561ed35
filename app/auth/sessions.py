"""Login sessions and their refresh-token families: start, rotate, revoke."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.tokens import hash_refresh_token, new_refresh_token
from app.db.models import AuthSession, RefreshToken, User, utcnow


class RevokeReason(StrEnum):
    LOGOUT = "logout"
    REUSE = "refresh_reuse"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 - a revocation reason
    DEACTIVATED = "deactivated"
    DELETED = "deleted"


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


class SessionRepository(SQLAlchemyAsyncRepository[AuthSession]):
    model_type = AuthSession


class LoginSessions:
    def __init__(self, db: AsyncSession, refresh_ttl_seconds: int) -> None:
        self._db = db
        self._repo = SessionRepository(session=db)
        self._refresh_ttl = dt.timedelta(seconds=refresh_ttl_seconds)

    async def start(self, user: User) -> tuple[UUID, str]:
        """A new session for ``user`` and the first refresh token of its family."""
        session = await self._repo.add(AuthSession(user_id=user.id))
        return session.id, await self._issue(session.id)

    async def rotate(self, presented: str) -> Rotation:
        """Spend ``presented`` and issue its successor; a second use revokes the whole family.

        The token row is locked (FOR UPDATE), so of two concurrent uses exactly one
        rotates and the other sees a spent token.
        """
        statement = (
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, RefreshToken.session_id == AuthSession.id)
            .join(User, AuthSession.user_id == User.id)
            .where(RefreshToken.token_hash == hash_refresh_token(presented))
            .with_for_update(of=RefreshToken)
        )
        row = (await self._db.execute(statement)).one_or_none()
        if row is None:
            return Rotation(RotationOutcome.UNKNOWN)
        token, session, user = row
        now = utcnow()
        if session.revoked_at is not None:
            return Rotation(RotationOutcome.REVOKED, user=user, session_id=session.id)
        if token.spent_at is not None:
            await self.revoke(session.id, RevokeReason.REUSE)
            return Rotation(RotationOutcome.REUSED, user=user, session_id=session.id)
        if token.expires_at <= now:
            return Rotation(RotationOutcome.EXPIRED, user=user, session_id=session.id)
        if not user.can_authenticate:
            return Rotation(RotationOutcome.USER_INACTIVE, user=user, session_id=session.id)
        token.spent_at = now
        return Rotation(
            RotationOutcome.ROTATED, user=user, session_id=session.id, refresh_token=await self._issue(session.id)
        )

    async def find_session_of(self, presented: str) -> UUID | None:
        statement = select(RefreshToken.session_id).where(RefreshToken.token_hash == hash_refresh_token(presented))
        return (await self._db.execute(statement)).scalar_one_or_none()

    async def revoke(self, session_id: UUID, reason: RevokeReason) -> None:
        await self._db.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason.value)
        )

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

    async def is_live(self, session_id: UUID, user_id: UUID) -> bool:
        statement = select(AuthSession.revoked_at).where(AuthSession.id == session_id, AuthSession.user_id == user_id)
        row = (await self._db.execute(statement)).one_or_none()
        return row is not None and row.revoked_at is None

    async def _issue(self, session_id: UUID) -> str:
        token, digest = new_refresh_token()
        self._db.add(RefreshToken(session_id=session_id, token_hash=digest, expires_at=utcnow() + self._refresh_ttl))
        await self._db.flush()
        return token
