"""The role guard with stand-ins for Litestar's connection and route handler."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import uuid4

import pytest
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.accounts.authentication import Principal, requires_role
from app.accounts.schemas import UserRead
from app.db.models import Role
from app.errors import NotAuthenticated, PermissionDenied


@dataclass
class FakeConnection:
    scope: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeHandler:
    opt: dict[str, Any] = field(default_factory=dict)


def user(role: Role) -> Principal:
    now = dt.datetime.now(dt.UTC)
    account = UserRead(
        id=uuid4(),
        username=f"{role.value}_1",
        email=f"{role.value}@example.com",
        full_name=None,
        role=role,
        is_active=True,
        is_verified=True,
        mfa_enabled=False,
        created_at=now,
        updated_at=now,
    )
    return Principal(account=account, session_id=uuid4())


def guard(scope_user: object, opt: dict[str, Any]) -> None:
    scope = {} if scope_user is None else {"user": scope_user}
    requires_role(
        cast("ASGIConnection[Any, Any, Any, Any]", FakeConnection(scope=scope)),
        cast("BaseRouteHandler", FakeHandler(opt=opt)),
    )


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.ADMIN, [Role.ADMIN]),
        (Role.ADMIN, [Role.ADMIN, Role.MODERATOR]),
        (Role.MODERATOR, [Role.ADMIN, Role.MODERATOR]),
        (Role.USER, [Role.USER]),
        (Role.MODERATOR, ["admin", "moderator"]),  # plain strings in opt work too
    ],
)
def test_allowed_role_passes(role: Role, allowed: list[Role | str]) -> None:
    guard(user(role), {"roles": allowed})


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.USER, [Role.ADMIN]),
        (Role.USER, [Role.ADMIN, Role.MODERATOR]),
        (Role.MODERATOR, [Role.ADMIN]),
        (Role.ADMIN, [Role.MODERATOR]),  # roles are not a hierarchy: only what is listed
    ],
)
def test_other_role_is_denied(role: Role, allowed: list[Role]) -> None:
    with pytest.raises(PermissionDenied):
        guard(user(role), {"roles": allowed})


@pytest.mark.parametrize("opt", [{"roles": [Role.ADMIN]}, {}])
def test_no_user_is_not_authenticated(opt: dict[str, Any]) -> None:
    with pytest.raises(NotAuthenticated):
        guard(None, opt)


@pytest.mark.parametrize("impostor", [{"role": "admin"}, "admin", Role.ADMIN, object()])
def test_something_that_is_not_a_user_is_not_authenticated(impostor: object) -> None:
    with pytest.raises(NotAuthenticated):
        guard(impostor, {"roles": [Role.ADMIN]})


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("opt", [{}, {"roles": []}, {"other": "value"}])
def test_without_roles_any_authenticated_user_is_admitted(role: Role, opt: dict[str, Any]) -> None:
    guard(user(role), opt)
