"""The users table: every query on it, and nothing that commits (use cases do).

advanced-alchemy's repository does the generic work (add, update, list and count); the
methods here are the queries the account and administration use cases need, each
written once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import IntegrityError as RepositoryIntegrityError
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import ColumnElement, Row, Select, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError as SQLAlchemyIntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.schemas import UserRead
from app.accounts.validation import email_key
from app.db.connections import statement_by_statement
from app.db.dialects import upsertable_insert
from app.db.models import AuthSession, Role, User
from app.errors import AlreadyRegistered, FieldError, UserNotFound, caused_by


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a login needs of an account, and nothing it does not."""

    user_id: UUID
    role: Role
    password_hash: str
    can_authenticate: bool
    deleted_at: dt.datetime | None
    mfa_enabled: bool = False


_CREDENTIALS = select(User.id, User.role, User.password_hash, User.can_authenticate, User.deleted_at, User.mfa_enabled)


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
    # PostgreSQL names the index; SQLite names an expression index, but a plain column's
    # index by its column ("UNIQUE constraint failed: users.email_key").
    markers = {"username": ("uq_users_username_lower",), "email": ("uq_users_email_key", "users.email_key")}
    fields = [
        FieldError(field, f"this {field} is already registered")
        for field, names in markers.items()
        if any(name in message for name in names)
    ]
    return fields or [FieldError("username", "this username or email is already registered")]


@contextlib.contextmanager
def _duplicates_refused() -> Iterator[None]:
    """A write that lost a race on a unique index is AlreadyRegistered, never a 500."""
    try:
        yield
    except (RepositoryIntegrityError, SQLAlchemyIntegrityError) as exc:
        # The database refused the row, or the connection died mid-statement, which
        # advanced-alchemy also calls IntegrityError (then: 503, not 409).
        if not caused_by(exc, SQLAlchemyIntegrityError):
            raise
        raise AlreadyRegistered(errors=duplicate_fields(exc)) from exc


class UserRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User

    async def get_live(self, user_id: UUID, *, lock: bool = False) -> User:
        """The user with this id, unless soft-deleted (then UserNotFound); with ``lock``,
        its row is locked for update until the caller's transaction ends."""
        statement = select(User).where(User.id == user_id, User.deleted_at.is_(None))
        if lock:
            # populate_existing: a locked read must show the row as it is now, not as an
            # earlier read in this session left it in the identity map.
            statement = statement.with_for_update().execution_options(populate_existing=True)
        user = (await self.session.execute(statement)).scalar_one_or_none()
        if user is None:
            raise UserNotFound()
        return user

    async def lock_active_admins(self) -> set[UUID]:
        """The ids of every active admin, their rows locked for update in id order (one
        order for every caller, so two administrative changes queue instead of deadlocking).
        A change that waited re-reads the set as it is after the other one committed."""
        statement = (
            select(User.id).where(User.role == Role.ADMIN, User.can_authenticate).order_by(User.id).with_for_update()
        )
        return set((await self.session.execute(statement)).scalars().all())

    async def current_role(self, user_id: UUID) -> Role | None:
        """The role of a user who may still authenticate, read now (None otherwise)."""
        statement = select(User.role).where(User.id == user_id, User.can_authenticate)
        role: Role | None = (await self.session.execute(statement)).scalar_one_or_none()
        return role

    async def find_credentials(self, login_name: str) -> Credentials | None:
        """What a login needs of the user that ``login_name`` names: an email's key
        (validation.email_key, which is what normalize_login_identifier gives for anything
        with an "@") or a username, compared as the unique indexes compare them, so login and
        uniqueness never disagree about a character.

        Read on its own autocommit connection, which goes back to the pool at once: the
        verify that follows may wait in the hashing queue, and a login waiting there must
        not hold one of the pool's connections (at saturation the queue would drain the
        pool and starve every other request).
        """
        if "@" in login_name:
            condition = User.email_key == login_name
        else:
            condition = func.lower(User.username) == func.lower(login_name)
        statement = _CREDENTIALS.where(condition).limit(1)
        bind = self.session.bind
        if isinstance(bind, AsyncEngine):
            async with statement_by_statement(bind) as reader:
                row = (await reader.execute(statement)).one_or_none()
        else:
            row = (await self.session.execute(statement)).one_or_none()
        return Credentials(*row) if row else None

    async def lock_credentials(self, user_id: UUID) -> Credentials | None:
        """The user's credentials again, inside the caller's write transaction, with a share
        lock on the row until it commits. A password change or a deactivation updates that
        row, so either it committed before (and this read sees it) or it waits until the
        caller's new session is committed (and then revokes it with the others)."""
        statement = _CREDENTIALS.where(User.id == user_id).with_for_update(read=True)
        row = (await self.session.execute(statement)).one_or_none()
        return Credentials(*row) if row else None

    async def find_by_email(self, address: str) -> User | None:
        """The live account whose address has the same key as ``address`` (None if none)."""
        statement = select(User).where(User.email_key == email_key(address), User.deleted_at.is_(None))
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def replace_password_hash(self, user_id: UUID, *, verified: str, new: str) -> bool:
        """Compare-and-set: write ``new`` only if the stored hash is still the one the
        caller verified; False when another change (a reset) committed in between."""
        result = await self.session.execute(
            update(User).where(User.id == user_id, User.password_hash == verified).values(password_hash=new)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        # Only the hash is written: a whole-object update would write back a deactivation
        # that committed meanwhile.
        await self.session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))

    async def taken_fields(
        self, *, username: str | None, email: str | None, exclude: UUID | None = None
    ) -> list[FieldError]:
        """Fields whose value another account (deleted ones included) already uses: the
        username case-insensitively, the email by its key (validation.email_key)."""
        checks: list[tuple[str, ColumnElement[bool]]] = []
        if username is not None:
            checks.append(("username", func.lower(User.username) == func.lower(username)))
        if email is not None:
            checks.append(("email", User.email_key == email_key(email)))
        if not checks:
            return []
        statement = select(*(condition.label(field) for field, condition in checks)).where(
            or_(*(condition for _, condition in checks))
        )
        if exclude is not None:
            statement = statement.where(User.id != exclude)
        rows = (await self.session.execute(statement)).all()
        return [
            FieldError(field, f"this {field} is already registered")
            for field, _ in checks
            if any(getattr(row, field) for row in rows)
        ]

    async def insert_new(self, user: User) -> User:
        with _duplicates_refused():
            return await self.add(user)

    async def save(self, user: User) -> User:
        """Write the entity's changed fields (flushed, not committed)."""
        with _duplicates_refused():
            return await self.update(user)

    async def search(self, criteria: UserFilter) -> tuple[Sequence[User], int]:
        """Live users matching the filters, oldest first (stable for offset pagination)."""
        filters: list[ColumnElement[bool]] = [User.deleted_at.is_(None)]
        if criteria.role is not None:
            filters.append(User.role == criteria.role)
        if criteria.is_active is not None:
            filters.append(User.is_active.is_(criteria.is_active))
        if criteria.query:
            # Folded as email keys are, so "JÜRGEN" and "strasse" find "jürgen.straße@…" on
            # every collation; an ASCII username's lower() is its folded form too.
            pattern = f"%{_escape_like(email_key(criteria.query))}%"
            filters.append(
                or_(
                    func.lower(User.username).like(pattern, escape="\\"),
                    User.email_key.like(pattern, escape="\\"),
                )
            )
        return await self.list_and_count(
            *filters,
            LimitOffset(limit=criteria.limit, offset=criteria.offset),
            OrderBy(field_name="created_at", sort_order="asc"),
            OrderBy(field_name="id", sort_order="asc"),
            # A separate COUNT: the window-function count rides on the rows, so a page past
            # the end would report total 0.
            count_with_window_function=False,
        )


# The caller of an authenticated request: the account's public fields, whether it may
# authenticate, and whether the token's session was revoked, in one indexed join.
_ACCOUNT_COLUMNS = tuple(getattr(User, field) for field in UserRead.__struct_fields__)
_CALLER: Select[Any] = (
    select(*_ACCOUNT_COLUMNS, User.can_authenticate, AuthSession.revoked_at)
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"))
)
_ACCOUNT_WIDTH = len(_ACCOUNT_COLUMNS)


async def read_live_caller(engine: AsyncEngine, user_id: UUID, session_id: UUID) -> UserRead | None:
    """The account behind a verified access token, or None when the account may no longer
    authenticate or the session has ended. Read fresh on every request, on a plain
    AUTOCOMMIT connection: a single read needs no ORM session and no BEGIN and ROLLBACK
    round trips around it."""
    async with statement_by_statement(engine) as reader:
        result = await reader.execute(_CALLER, {"user_id": user_id, "session_id": session_id})
        row: Row[Any] | None = result.one_or_none()
    if row is None:
        return None
    can_authenticate, revoked_at = row[_ACCOUNT_WIDTH], row[_ACCOUNT_WIDTH + 1]
    if revoked_at is not None or not can_authenticate:
        return None
    return UserRead(*row[:_ACCOUNT_WIDTH])


def insert_users_ignoring_duplicates(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` for bulk seeding: any unique index
    (the case-insensitive username and the email key included) turns a duplicate into a
    skipped row, and only rows really inserted come back. Each row must carry its
    ``email_key`` (validation.email_key of its email); the column is NOT NULL."""
    return upsertable_insert(dialect, User).on_conflict_do_nothing().returning(User.id)
