"""Request and response bodies of user administration (/api/v1/users)."""

from __future__ import annotations

import msgspec

from app.accounts.schemas import UserRead
from app.db.models import Role


class UserPage(msgspec.Struct):
    items: list[UserRead]
    total: int
    limit: int
    offset: int


class UserAdminUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET
