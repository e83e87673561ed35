"""Who is calling: bearer-token authentication and the role guard.

The middleware verifies the JWT, then reads the account and the login session (through
``LiveCallers``, app/accounts/callers.py, which remembers the answer for a second and
forgets it at once when this replica changes an account or a session), so a logout,
deactivation or deletion takes effect on the next request here and within a second on
every other replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from litestar import Request
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult

from app.accounts.callers import LiveCallers
from app.accounts.schemas import UserRead
from app.db.models import Role
from app.errors import NotAuthenticated, PermissionDenied
from app.identity.tokens import AccessClaims, TokenIssuer

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import ASGIApp


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of an authenticated request: plain data, no ORM session behind it.
    Handlers that change the account load the entity by ``id`` (GET /me needs none)."""

    account: UserRead
    session_id: UUID

    @property
    def id(self) -> UUID:
        return self.account.id

    @property
    def role(self) -> Role:
        return self.account.role


# What handlers behind the middleware receive: the caller and its verified token claims.
AuthedRequest = Request[Principal, AccessClaims, Any]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenIssuer,
        callers: LiveCallers,
        exclude: list[str] | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude)
        self._tokens = tokens
        self._callers = callers

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise NotAuthenticated()
        claims = self._tokens.verify_access(credentials.strip())
        account = await self._callers.get(claims.user_id, claims.session_id)
        if account is None:
            raise NotAuthenticated("The session has ended or the account is no longer active.")
        return AuthenticationResult(user=Principal(account, claims.session_id), auth=claims)


def requires_role(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: a handler lists the roles it admits in ``opt["roles"]``."""
    allowed: frozenset[Role] = frozenset(handler.opt.get("roles", ()))
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthenticated()
    if allowed and user.role not in allowed:
        raise PermissionDenied()
