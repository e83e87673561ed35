"""Sessions a person can see and end, and an admin's view of another user's sessions.
Ending a session is what logout does: its refresh token is refused at once, its access
tokens at their next request (every authenticated request reads the session)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from app.accounts.audit import AuditTrail, EventPage
from app.accounts.repository import UserRepository
from app.accounts.sessions import LoginSessions, RevokeReason, SessionView
from app.errors import SessionNotFound
from app.observability.events import SecurityEvents

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


class SessionManagement:
    def __init__(
        self,
        *,
        db: AsyncSession,
        users: UserRepository,
        sessions: LoginSessions,
        events: SecurityEvents,
        audit: AuditTrail | None = None,
    ) -> None:
        self._db = db
        self._audit = audit or AuditTrail(db)
        self._users = users
        self._sessions = sessions
        self._events = events

    async def events_of(self, user_id: UUID, *, limit: int, offset: int) -> EventPage:
        """A live user's security events, newest first (UserNotFound for a deleted one)."""
        await self._users.get_live(user_id)
        page = await self._audit.page_of(user_id, limit=limit, offset=offset)
        await self._db.commit()
        return page

    async def list_of(self, user_id: UUID) -> list[SessionView]:
        """The live sessions of a live user (UserNotFound for a deleted one), newest first."""
        await self._users.get_live(user_id)
        views = await self._sessions.live_of(user_id)
        await self._db.commit()
        return views

    async def end_one(self, user_id: UUID, session_id: UUID) -> None:
        """End one of the caller's own sessions (the current one too: that is a logout)."""
        if not await self._sessions.revoke_of(user_id, session_id, RevokeReason.ENDED_BY_USER):
            raise SessionNotFound()
        self._audit.record("session_revoked", user_id, session_id=str(session_id))
        await self._db.commit()
        self._events.session_revoked(user_id, session_id, by=user_id)

    async def end_others(self, user_id: UUID, current_session: UUID) -> None:
        """End every session of the caller but the one making the request."""
        await self._sessions.revoke_all_of(user_id, RevokeReason.ENDED_BY_USER, keep=current_session)
        self._audit.record("session_revoked", user_id, all_but=str(current_session))
        await self._db.commit()
        self._events.sessions_revoked(user_id, by=user_id)

    async def end_all(self, actor_id: UUID, user_id: UUID) -> None:
        """An admin ends every session of a live user (UserNotFound otherwise)."""
        await self._users.get_live(user_id)
        await self._sessions.revoke_all_of(user_id, RevokeReason.ENDED_BY_ADMIN)
        self._audit.record("session_revoked", user_id, actor_id=actor_id, all=True)
        await self._db.commit()
        self._events.sessions_revoked(user_id, by=actor_id)
