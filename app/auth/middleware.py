"""Bearer-token authentication: verifies the JWT, then checks the user and the login
session in the database, so logout, deactivation and deletion take effect at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import bindparam, select

from app.auth.principal import Principal
from app.auth.tokens import TokenIssuer
from app.db.models import AuthSession, User
from app.errors import NotAuthenticated

if TYPE_CHECKING:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp


_CALLER = (
    select(
        User.id,
        User.username,
        User.email,
        User.full_name,
        User.role,
        User.is_active,
        User.is_verified,
        User.deleted_at,
        User.created_at,
        User.updated_at,
        AuthSession.revoked_at,
    )
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"))
)


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
        self._engine = db_config.get_engine()

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise NotAuthenticated()
        claims = self._tokens.verify_access(credentials.strip())
        # One indexed join per request, on a plain connection (no ORM session): the user's
        # state and the session's revocation are read fresh every time.
        # AUTOCOMMIT: a single read needs no BEGIN and ROLLBACK round trips around it.
        async with self._engine.connect() as db:
            reader = await db.execution_options(isolation_level="AUTOCOMMIT")
            result = await reader.execute(_CALLER, {"user_id": claims.user_id, "session_id": claims.session_id})
            row = result.one_or_none()
        if row is None or row.revoked_at is not None or not row.is_active or row.deleted_at is not None:
            raise NotAuthenticated("The session has ended or the account is no longer active.")
        principal = Principal(
            id=row.id,
            username=row.username,
            email=row.email,
            full_name=row.full_name,
            role=row.role,
            is_active=row.is_active,
            is_verified=row.is_verified,
            created_at=row.created_at,
            updated_at=row.updated_at,
            session_id=claims.session_id,
        )
        return AuthenticationResult(user=principal, auth=claims)
