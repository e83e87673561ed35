"""Administrative changes that must end a user's sessions in the same transaction."""

from __future__ import annotations

from uuid import UUID

from app.auth.principal import UserLike
from app.auth.sessions import LoginSessions, RevokeReason
from app.db.models import Role, User
from app.observability.events import SecurityEvents
from app.users.services import UserService


class UserAdministration:
    def __init__(self, users: UserService, sessions: LoginSessions, events: SecurityEvents) -> None:
        self._users = users
        self._sessions = sessions
        self._events = events

    async def change(self, actor: UserLike, target_id: UUID, *, role: Role | None, is_active: bool | None) -> User:
        """Role and activation changes; a deactivation ends every session of the user at once."""
        target = await self._users.get_live(target_id)
        old_role, was_active = target.role, target.is_active
        user = await self._users.administer(actor, target, role=role, is_active=is_active)
        if is_active is False:
            await self._sessions.revoke_all_of(user.id, RevokeReason.DEACTIVATED)
        await self._users.repository.session.commit()
        if user.role is not old_role:
            self._events.role_changed(actor_id=actor.id, user_id=user.id, old_role=old_role, new_role=user.role)
        if user.is_active is not was_active:
            self._events.activation_changed(actor_id=actor.id, user_id=user.id, is_active=user.is_active)
        return user

    async def delete(self, actor: UserLike, target_id: UUID) -> None:
        """Soft delete: the row stays, the account and all its sessions are dead."""
        target = await self._users.get_live(target_id)
        await self._users.soft_delete(actor, target)
        await self._sessions.revoke_all_of(target.id, RevokeReason.DELETED)
        await self._users.repository.session.commit()
        self._events.user_deleted(actor_id=actor.id, user_id=target.id)
