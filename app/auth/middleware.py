"""Bearer-token authentication: verifies the JWT, then checks the user and the login
session in the database, so logout, deactivation and deletion take effect at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import select

from app.auth.tokens import TokenIssuer
from app.db.models import AuthSession, User
from app.errors import NotAuthenticated

if TYPE_CHECKING:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenIssuer,
        db_config: SQLAlchemyAsyncConfig,
        exclude: list[str] | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude)
        self._tokens = tokens
        self._db_config = db_config

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise NotAuthenticated()
        claims = self._tokens.verify_access(credentials.strip())
        # The same session the handler's dependencies get (advanced-alchemy keeps it in the
        # scope), so an authenticated request still uses one connection.
        db = self._db_config.provide_session(connection.app.state, connection.scope)
        statement = (
            select(User, AuthSession.revoked_at)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(User.id == claims.user_id, AuthSession.id == claims.session_id)
        )
        row = (await db.execute(statement)).one_or_none()
        if row is None or row.revoked_at is not None or not row.User.can_authenticate:
            raise NotAuthenticated("The session has ended or the account is no longer active.")
        return AuthenticationResult(user=row.User, auth=claims)
