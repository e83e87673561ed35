"""Users: look-ups, registration-time uniqueness, profile and administrative changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from advanced_alchemy.exceptions import IntegrityError as RepositoryIntegrityError
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError as SQLAlchemyIntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import UserLike
from app.db.models import Role, User
from app.errors import AlreadyRegistered, FieldError, InvalidInput, PermissionDenied, UserNotFound, caused_by
from app.users.validation import normalize_email, normalize_full_name


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: UUID
    role: Role
    password_hash: str
    is_active: bool
    deleted_at: dt.datetime | None

    @property
    def can_authenticate(self) -> bool:
        return self.is_active and self.deleted_at is None


@dataclass(frozen=True, slots=True)
class UserFilter:
    limit: int = 20
    offset: int = 0
    role: Role | None = None
    is_active: bool | None = None
    query: str | None = None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def duplicate_fields(exc: Exception) -> list[FieldError]:
    """Which unique index a failed insert hit, from the database's own message."""
    message = str(getattr(exc, "orig", None) or exc.__cause__ or exc)
    fields = [
        FieldError(field, f"this {field} is already registered")
        for field, index in (("username", "uq_users_username_lower"), ("email", "uq_users_email_lower"))
        if index in message
    ]
    return fields or [FieldError("username", "this username or email is already registered")]


class UserRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User


class UserService(SQLAlchemyAsyncRepositoryService[User, UserRepository]):
    repository_type = UserRepository

    async def get_live(self, user_id: UUID) -> User:
        """The user with this id, unless soft-deleted (then UserNotFound)."""
        user = await self.get_one_or_none(User.id == user_id, User.deleted_at.is_(None))
        if user is None:
            raise UserNotFound()
        return user

    async def find_credentials(self, identifier: str) -> Credentials | None:
        """What a login needs of the user whose username or email equals ``identifier``.

        Compared case-insensitively by the database's lower() on both sides, the function
        the unique indexes use, so login and uniqueness never disagree about a character.
        Read on its own autocommit connection, which goes back to the pool at once: the
        verify that follows may wait in the hashing queue, and a login waiting there must
        not hold one of the pool's connections (at saturation the queue would drain the
        pool and starve every other request).
        """
        folded = func.lower(identifier)
        statement = (
            select(User.id, User.role, User.password_hash, User.is_active, User.deleted_at)
            .where(or_(func.lower(User.username) == folded, func.lower(User.email) == folded))
            .limit(1)
        )
        bind = self.repository.session.bind
        if isinstance(bind, AsyncEngine):
            async with bind.connect() as connection:
                reader = await connection.execution_options(isolation_level="AUTOCOMMIT")
                row = (await reader.execute(statement)).one_or_none()
        else:
            row = (await self.repository.session.execute(statement)).one_or_none()
        if row is None:
            return None
        user_id, role, password_hash, is_active, deleted_at = row
        return Credentials(user_id, role, password_hash, is_active, deleted_at)

    async def lock_credentials(self, user_id: UUID) -> Credentials | None:
        """The user's credentials again, inside the caller's write transaction, with a share
        lock on the row until it commits. A password change or a deactivation updates that
        row, so either it committed before (and this read sees it) or it waits until the
        caller's new session is committed (and then revokes it with the others)."""
        statement = (
            select(User.id, User.role, User.password_hash, User.is_active, User.deleted_at)
            .where(User.id == user_id)
            .with_for_update(read=True)
        )
        row = (await self.repository.session.execute(statement)).one_or_none()
        return Credentials(*row) if row else None

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        await self.repository.session.execute(
            update(User).where(User.id == user_id).values(password_hash=password_hash)
        )

    async def taken_fields(
        self, *, username: str | None, email: str | None, exclude: UUID | None = None
    ) -> list[FieldError]:
        """Fields whose value another account (deleted ones included) already uses."""
        checks: list[tuple[str, ColumnElement[bool]]] = []
        if username is not None:
            checks.append(("username", func.lower(User.username) == func.lower(username)))
        if email is not None:
            checks.append(("email", func.lower(User.email) == func.lower(email)))
        if not checks:
            return []
        statement = select(*(condition.label(field) for field, condition in checks)).where(
            or_(*(condition for _, condition in checks))
        )
        if exclude is not None:
            statement = statement.where(User.id != exclude)
        rows = (await self.repository.session.execute(statement)).all()
        return [
            FieldError(field, f"this {field} is already registered")
            for field, _ in checks
            if any(getattr(row, field) for row in rows)
        ]

    async def insert_new(self, user: User) -> User:
        """Insert; a race lost on a unique index becomes AlreadyRegistered, never a 500."""
        try:
            return await self.repository.add(user)
        except (RepositoryIntegrityError, SQLAlchemyIntegrityError) as exc:
            # The database refused the row, or the connection died mid-statement, which
            # advanced-alchemy also calls IntegrityError (then: 503, not 409).
            if not caused_by(exc, SQLAlchemyIntegrityError):
                raise
            raise AlreadyRegistered(errors=duplicate_fields(exc)) from exc

    async def search(self, criteria: UserFilter) -> tuple[Sequence[User], int]:
        """Live users matching the filters, oldest first (stable for offset pagination)."""
        filters: list[ColumnElement[bool]] = [User.deleted_at.is_(None)]
        if criteria.role is not None:
            filters.append(User.role == criteria.role)
        if criteria.is_active is not None:
            filters.append(User.is_active.is_(criteria.is_active))
        if criteria.query:
            pattern = f"%{_escape_like(criteria.query.lower())}%"
            filters.append(
                or_(
                    func.lower(User.username).like(pattern, escape="\\"),
                    func.lower(User.email).like(pattern, escape="\\"),
                )
            )
        return await self.get_many_and_count(
            *filters,
            LimitOffset(limit=criteria.limit, offset=criteria.offset),
            OrderBy(field_name="created_at", sort_order="asc"),
            OrderBy(field_name="id", sort_order="asc"),
            # A separate COUNT: the window-function count rides on the rows, so a page past
            # the end would report total 0.
            count_with_window_function=False,
        )

    async def update_profile(
        self, user: User, *, email: str | None, full_name: str | None, set_full_name: bool
    ) -> User:
        """Change email and/or full name; a changed email must be verified again."""
        errors: list[FieldError] = []
        new_email: str | None = None
        if email is not None:
            new_email, email_errors = normalize_email(email)
            errors += email_errors
        new_name: str | None = None
        if set_full_name:
            new_name, name_errors = normalize_full_name(full_name)
            errors += name_errors
        if errors:
            raise InvalidInput(errors=errors)
        if new_email is not None and new_email.casefold() != user.email.casefold():
            if taken := await self.taken_fields(username=None, email=new_email, exclude=user.id):
                raise AlreadyRegistered(errors=taken)
            user.email = new_email
            user.is_verified = False
        elif new_email is not None:
            user.email = new_email  # same address, maybe other letter case: still verified
        if set_full_name:
            user.full_name = new_name
        try:
            updated = await self.repository.update(user)
            await self.repository.session.commit()
        except (RepositoryIntegrityError, SQLAlchemyIntegrityError) as exc:
            if not caused_by(exc, SQLAlchemyIntegrityError):
                raise
            raise AlreadyRegistered(errors=duplicate_fields(exc)) from exc
        return updated

    async def administer(self, actor: UserLike, target: User, *, role: Role | None, is_active: bool | None) -> User:
        """Apply an admin's or moderator's change, with API.md's rules for who may do what.

        Not committed here: the caller ends the target's sessions in the same transaction.
        """
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
        if role is not None:
            target.role = role
        if is_active is not None:
            target.is_active = is_active
        return await self.repository.update(target)

    async def soft_delete(self, actor: UserLike, target: User) -> User:
        """Mark the account deleted (not committed: see ``administer``)."""
        if actor.id == target.id:
            raise PermissionDenied("You cannot delete your own account here.")
        target.deleted_at = dt.datetime.now(dt.UTC)
        target.is_active = False
        return await self.repository.update(target)
