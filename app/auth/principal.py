"""The authenticated caller, as read on every request: plain data, no ORM session behind it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from app.db.models import Role


class UserLike(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def username(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def full_name(self) -> str | None: ...
    @property
    def role(self) -> Role: ...
    @property
    def is_active(self) -> bool: ...
    @property
    def is_verified(self) -> bool: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def updated_at(self) -> dt.datetime: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of an authenticated request; handlers that change the account load the
    ORM entity by ``id`` (GET /me needs none)."""

    id: UUID
    username: str
    email: str
    full_name: str | None
    role: Role
    is_active: bool
    is_verified: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    session_id: UUID
