"""Request and response bodies of /api/v1/users."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from uuid import UUID

import msgspec

from app.auth.principal import UserLike
from app.auth.schemas import RawPassword
from app.db.models import Role


class UserRead(msgspec.Struct):
    id: UUID
    username: str
    email: str
    full_name: str | None
    role: Role
    is_active: bool
    is_verified: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, user: UserLike) -> UserRead:
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            full_name=user.full_name,
            role=user.role,
            is_active=user.is_active,
            is_verified=user.is_verified,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class UserPage(msgspec.Struct):
    items: list[UserRead]
    total: int
    limit: int
    offset: int


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; ``full_name: null`` clears the name."""

    email: Annotated[str, msgspec.Meta(max_length=320)] | msgspec.UnsetType = msgspec.UNSET
    full_name: Annotated[str, msgspec.Meta(max_length=400)] | msgspec.UnsetType | None = msgspec.UNSET


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: RawPassword
    new_password: RawPassword


class UserAdminUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET
