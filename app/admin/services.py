"""User administration by admins and moderators: look-ups, role and activation changes,
soft deletion. A change that must end the user's sessions does so in its own transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from app.accounts.authentication import Principal
from app.accounts.repository import UserFilter, UserRepository
from app.accounts.sessions import LoginSessions, RevokeReason
from app.db.models import Role, User
from app.errors import PermissionDenied
from app.observability.events import SecurityEvents

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


class UserAdministration:
    def __init__(
        self, *, db: AsyncSession, users: UserRepository, sessions: LoginSessions, events: SecurityEvents
    ) -> None:
        self._db = db
        self._users = users
        self._sessions = sessions
        self._events = events

    async def search(self, criteria: UserFilter) -> tuple[Sequence[User], int]:
        return await self._users.search(criteria)

    async def get(self, user_id: UUID) -> User:
        return await self._users.get_live(user_id)

    async def change(self, actor: Principal, target_id: UUID, *, role: Role | None, is_active: bool | None) -> User:
        """Role and activation changes, with docs/api.md's rules for who may do what; a
        deactivation ends every session of the user at once."""
        target = await self._users.get_live(target_id)
        old_role, was_active = target.role, target.is_active
        _check_may_change(actor, target, role=role, is_active=is_active)
        if role is not None:
            target.role = role
        if is_active is not None:
            target.is_active = is_active
        user = await self._users.save(target)
        if is_active is False:
            await self._sessions.revoke_all_of(user.id, RevokeReason.DEACTIVATED)
        await self._db.commit()
        if user.role is not old_role:
            self._events.role_changed(actor_id=actor.id, user_id=user.id, old_role=old_role, new_role=user.role)
        if user.is_active is not was_active:
            self._events.activation_changed(actor_id=actor.id, user_id=user.id, is_active=user.is_active)
        return user

    async def delete(self, actor: Principal, target_id: UUID) -> None:
        """Soft delete: the row stays, the account and all its sessions are dead."""
        target = await self._users.get_live(target_id)
        if actor.id == target.id:
            raise PermissionDenied("You cannot delete your own account here.")
        target.deleted_at = dt.datetime.now(dt.UTC)
        target.is_active = False
        await self._users.save(target)
        await self._sessions.revoke_all_of(target.id, RevokeReason.DELETED)
        await self._db.commit()
        self._events.user_deleted(actor_id=actor.id, user_id=target.id)


def _check_may_change(actor: Principal, target: User, *, role: Role | None, is_active: bool | None) -> None:
    if actor.role is Role.MODERATOR:
        if role is not None:
            raise PermissionDenied("Moderators cannot change roles.")
        if target.role is not Role.USER:
            raise PermissionDenied("Moderators can only activate or deactivate plain users.")
    elif actor.role is not Role.ADMIN:
        raise PermissionDenied()
    if actor.id == target.id and ((role is not None and role is not actor.role) or is_active is False):
        # An admin locking themselves out could leave the service with no admin at all.
        raise PermissionDenied("You cannot change your own role or deactivate yourself.")
