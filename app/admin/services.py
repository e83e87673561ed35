"""User administration by admins and moderators: look-ups, role and activation changes,
soft deletion, removing a second factor. A change that must end the user's sessions does so
in its own transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from app.accounts.account_tokens import AccountTokens
from app.accounts.audit import AuditTrail
from app.accounts.authentication import Principal
from app.accounts.mails import AccountMails
from app.accounts.mfa_store import MfaStore
from app.accounts.repository import UserFilter, UserRepository
from app.accounts.sessions import LoginSessions, RevokeReason
from app.db.models import Role, User
from app.errors import MfaNotEnabled, PermissionDenied
from app.mail.outbox import enqueue
from app.observability.events import SecurityEvents
from app.settings import MailSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


class UserAdministration:
    def __init__(
        self,
        *,
        db: AsyncSession,
        users: UserRepository,
        sessions: LoginSessions,
        account_tokens: AccountTokens,
        events: SecurityEvents,
        mails: AccountMails,
        mail_settings: MailSettings,
        audit: AuditTrail | None = None,
    ) -> None:
        self._db = db
        self._mfa = MfaStore(db)
        self._mails = mails
        self._mail_settings = mail_settings
        self._audit = audit or AuditTrail(db)
        self._account_tokens = account_tokens
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
        actor_role, admins = await self._lock_for_change(actor)
        target = await self._users.get_live(target_id, lock=True)
        old_role, was_active = target.role, target.is_active
        _check_may_change(actor.id, actor_role, target, role=role, is_active=is_active)
        removes_admin = target.id in admins and ((role is not None and role is not Role.ADMIN) or is_active is False)
        if removes_admin:
            _keep_an_admin(admins - {target.id})
        if role is not None:
            target.role = role
        if is_active is not None:
            target.is_active = is_active
        user = await self._users.save(target)
        if user.role is not old_role:
            self._audit.record("role_changed", user.id, actor_id=actor.id, old_role=old_role, new_role=user.role)
        if user.is_active is not was_active:
            self._audit.record("reactivated" if user.is_active else "deactivated", user.id, actor_id=actor.id)
        if is_active is False:
            await self._sessions.revoke_all_of(user.id, RevokeReason.DEACTIVATED)
            # Links mailed before stay dead even if the account is reactivated.
            await self._account_tokens.revoke_all_of(user.id)
        await self._db.commit()
        if user.role is not old_role:
            self._events.role_changed(actor_id=actor.id, user_id=user.id, old_role=old_role, new_role=user.role)
        if user.is_active is not was_active:
            self._events.activation_changed(actor_id=actor.id, user_id=user.id, is_active=user.is_active)
        return user

    async def delete(self, actor: Principal, target_id: UUID) -> None:
        """Soft delete: the row stays, the account and all its sessions are dead."""
        actor_role, admins = await self._lock_for_change(actor)
        if actor_role is not Role.ADMIN:
            raise PermissionDenied()
        target = await self._users.get_live(target_id, lock=True)
        if actor.id == target.id:
            raise PermissionDenied("You cannot delete your own account here.")
        if target.id in admins:
            _keep_an_admin(admins - {target.id})
        target.deleted_at = dt.datetime.now(dt.UTC)
        target.is_active = False
        await self._users.save(target)
        await self._sessions.revoke_all_of(target.id, RevokeReason.DELETED)
        await self._account_tokens.revoke_all_of(target.id)
        self._audit.record("deleted", target.id, actor_id=actor.id)
        await self._db.commit()
        self._events.user_deleted(actor_id=actor.id, user_id=target.id)

    async def remove_second_factor(self, actor: Principal, target_id: UUID) -> None:
        """Support's way back in for an owner who lost both the authenticator and the
        recovery codes: the factor goes as with DELETE /me/mfa/totp (its secret, recovery
        codes and open login challenges), the owner is mailed, the trail names the admin.
        Sessions stay, as when the owner turns it off; DELETE /{id}/sessions ends them."""
        actor_role, _ = await self._lock_for_change(actor)
        if actor_role is not Role.ADMIN:
            raise PermissionDenied()
        if actor.id == target_id:
            # Here no code is asked for: a stolen admin session must not shed its own factor.
            raise PermissionDenied("Turn your own second factor off at /api/v1/users/me/mfa/totp, with a code.")
        target = await self._users.get_live(target_id, lock=True)
        if not target.mfa_enabled:
            raise MfaNotEnabled("This user has no second factor to remove.")
        await self._mfa.remove(target.id)
        self._audit.record("mfa_disabled", target.id, actor_id=actor.id)
        # In the same transaction: no removal without its notice, no notice of a removal
        # that did not happen.
        await enqueue(
            self._db, self._mails.second_factor_removed(target.email, username=target.username), self._mail_settings
        )
        await self._db.commit()
        self._events.mfa_disabled(target.id, actor_id=actor.id)

    async def _lock_for_change(self, actor: Principal) -> tuple[Role | None, set[UUID]]:
        """Every administrative write starts here, in its own transaction: the active
        admins are locked, then the actor's role is read again. The token's role is only
        what the actor was when it was checked; two admins demoting each other at the same
        moment would otherwise both pass that check and leave no admin. Now the second
        waits for the first and finds that it is no longer an admin."""
        admins = await self._users.lock_active_admins()
        return await self._users.current_role(actor.id), admins


def _keep_an_admin(remaining_admins: set[UUID]) -> None:
    # Unreachable while the actor is a locked, re-read admin other than the target; kept
    # so that no future path (a new endpoint, a CLI command) can leave the service with
    # nobody able to administer it.
    if not remaining_admins:
        raise PermissionDenied("This change would leave no active admin.")


def _check_may_change(
    actor_id: UUID, actor_role: Role | None, target: User, *, role: Role | None, is_active: bool | None
) -> None:
    if actor_role is Role.MODERATOR:
        if role is not None:
            raise PermissionDenied("Moderators cannot change roles.")
        if target.role is not Role.USER:
            raise PermissionDenied("Moderators can only activate or deactivate plain users.")
    elif actor_role is not Role.ADMIN:
        raise PermissionDenied()
    if actor_id == target.id and ((role is not None and role is not actor_role) or is_active is False):
        # An admin locking themselves out could leave the service with no admin at all.
        raise PermissionDenied("You cannot change your own role or deactivate yourself.")
