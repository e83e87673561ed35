"""Role guard: a handler lists the roles it admits in ``opt["roles"]``."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.auth.principal import Principal
from app.db.models import Role
from app.errors import NotAuthenticated, PermissionDenied


def requires_role(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    allowed: frozenset[Role] = frozenset(handler.opt.get("roles", ()))
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthenticated()
    if allowed and user.role not in allowed:
        raise PermissionDenied()
