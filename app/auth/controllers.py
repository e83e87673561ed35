"""/api/v1/auth: register, login, refresh, logout; and the JWKS other services verify with."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.datastructures import CacheControlHeader, State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.auth.dependencies import provide_auth_service, provide_users_service
from app.auth.schemas import JsonWebKey, JsonWebKeySet, LoginRequest, RefreshRequest, TokenPair, UserCreate
from app.auth.services import AuthService, IssuedTokens, Registration
from app.auth.tokens import TokenIssuer
from app.edge.rate_limits import RATE_LIMIT_OPT
from app.openapi import BODY, problems
from app.users.schemas import UserRead

NO_STORE = CacheControlHeader(no_store=True)


def _pair(issued: IssuedTokens) -> TokenPair:
    return TokenPair(access_token=issued.access_token, refresh_token=issued.refresh_token, expires_in=issued.expires_in)


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    opt = {"exclude_from_auth": True}
    dependencies = {
        "users_service": Provide(provide_users_service),
        "auth_service": Provide(provide_auth_service, sync_to_thread=False),
    }

    @post(
        "/register",
        status_code=HTTP_201_CREATED,
        summary="Create an account",
        opt={RATE_LIMIT_OPT: "register"},
        responses=problems(*BODY, 409, 429, 503),
    )
    async def register(self, data: JSONBody[UserCreate], auth_service: NamedDependency[AuthService]) -> UserRead:
        user = await auth_service.register(
            Registration(username=data.username, email=data.email, password=data.password, full_name=data.full_name)
        )
        return UserRead.of(user)

    @post(
        "/login",
        status_code=HTTP_200_OK,
        cache_control=NO_STORE,
        summary="Exchange credentials for tokens",
        opt={RATE_LIMIT_OPT: "login"},
        responses=problems(*BODY, 401, 429, 503),
    )
    async def login(self, data: JSONBody[LoginRequest], auth_service: NamedDependency[AuthService]) -> TokenPair:
        return _pair(await auth_service.login(data.username, data.password))

    @post(
        "/refresh",
        status_code=HTTP_200_OK,
        cache_control=NO_STORE,
        summary="Rotate a refresh token",
        opt={RATE_LIMIT_OPT: "refresh"},
        responses=problems(*BODY, 401, 429, 503),
    )
    async def refresh(self, data: JSONBody[RefreshRequest], auth_service: NamedDependency[AuthService]) -> TokenPair:
        return _pair(await auth_service.refresh(data.refresh_token))

    @post(
        "/logout",
        status_code=HTTP_204_NO_CONTENT,
        summary="End the session of a refresh token",
        responses=problems(*BODY, 503),
    )
    async def logout(self, data: JSONBody[RefreshRequest], auth_service: NamedDependency[AuthService]) -> None:
        await auth_service.logout(data.refresh_token)


@get(
    "/.well-known/jwks.json",
    exclude_from_auth=True,
    tags=["auth"],
    cache_control=CacheControlHeader(max_age=300, public=True),
    summary="Public keys that verify access tokens",
    sync_to_thread=False,
)
def jwks(state: State) -> JsonWebKeySet:
    issuer: TokenIssuer = state.token_issuer
    return JsonWebKeySet(keys=[JsonWebKey(**key) for key in issuer.jwks()["keys"]])
