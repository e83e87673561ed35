"""The account's HTTP surface: /api/v1/auth (register, login, refresh, logout), the JWKS
other services verify with, and /api/v1/users/me (the caller's own account)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, patch, post, put
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.accounts.authentication import AuthedRequest
from app.accounts.dependencies import client_of, provide_account_service
from app.accounts.schemas import (
    JsonWebKey,
    JsonWebKeySet,
    LoginRequest,
    PasswordChange,
    ProfileUpdate,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserRead,
)
from app.accounts.services import AccountService, IssuedTokens, ProfileChange, Registration
from app.container import Container
from app.web.openapi import BEARER, BODY, mfa_required, problems
from app.web.rate_limits import PASSWORD_CHECK_POLICY, RATE_LIMIT_OPT

NO_STORE = CacheControlHeader(no_store=True)


def _pair(issued: IssuedTokens) -> TokenPair:
    return TokenPair(access_token=issued.access_token, refresh_token=issued.refresh_token, expires_in=issued.expires_in)


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    opt = {"exclude_from_auth": True}
    dependencies = {"auth_service": Provide(provide_account_service, sync_to_thread=False)}

    @post(
        "/register",
        status_code=HTTP_201_CREATED,
        summary="Create an account",
        opt={RATE_LIMIT_OPT: "register"},
        responses=problems(*BODY, 409, 429, 503),
    )
    async def register(self, data: JSONBody[UserCreate], auth_service: NamedDependency[AccountService]) -> UserRead:
        user = await auth_service.register(
            Registration(username=data.username, email=data.email, password=data.password, full_name=data.full_name)
        )
        return UserRead.of(user)

    @post(
        "/login",
        status_code=HTTP_200_OK,
        cache_control=NO_STORE,
        summary="Exchange credentials for tokens (403 mfa-required: continue at /login/mfa)",
        opt={RATE_LIMIT_OPT: "login"},
        responses={**problems(*BODY, 401, 429, 503), **mfa_required()},
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginRequest],
        auth_service: NamedDependency[AccountService],
    ) -> TokenPair:
        return _pair(await auth_service.login(data.username, data.password, client_of(request)))

    @post(
        "/refresh",
        status_code=HTTP_200_OK,
        cache_control=NO_STORE,
        summary="Rotate a refresh token",
        opt={RATE_LIMIT_OPT: "refresh"},
        responses=problems(*BODY, 401, 429, 503),
    )
    async def refresh(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RefreshRequest],
        auth_service: NamedDependency[AccountService],
    ) -> TokenPair:
        return _pair(await auth_service.refresh(data.refresh_token, client_of(request)))

    @post(
        "/logout",
        status_code=HTTP_204_NO_CONTENT,
        summary="End the session of a refresh token",
        responses=problems(*BODY, 503),
    )
    async def logout(self, data: JSONBody[RefreshRequest], auth_service: NamedDependency[AccountService]) -> None:
        await auth_service.logout(data.refresh_token)


@get(
    "/.well-known/jwks.json",
    exclude_from_auth=True,
    tags=["auth"],
    cache_control=CacheControlHeader(max_age=300, public=True),
    summary="Public keys that verify access tokens",
    sync_to_thread=False,
)
def jwks(container: NamedDependency[Container]) -> JsonWebKeySet:
    return JsonWebKeySet(keys=[JsonWebKey(**key) for key in container.tokens.jwks()["keys"]])


class MeController(Controller):
    path = "/api/v1/users/me"
    tags = ["users"]
    security = [BEARER]
    dependencies = {"auth_service": Provide(provide_account_service, sync_to_thread=False)}

    @get(summary="The caller's account", responses=problems(401, 503))
    async def read_me(self, request: AuthedRequest) -> UserRead:
        # Read fresh by the authentication middleware for this very request.
        return request.user.account

    @patch(
        summary="Change the caller's full name (the email changes through POST /me/email)",
        responses=problems(*BODY, 401, 503),
    )
    async def update_me(
        self, request: AuthedRequest, data: JSONBody[ProfileUpdate], auth_service: NamedDependency[AccountService]
    ) -> UserRead:
        change = ProfileChange(
            full_name=None if data.full_name is msgspec.UNSET else data.full_name,
            set_full_name=data.full_name is not msgspec.UNSET,
        )
        return UserRead.of(await auth_service.update_profile(request.user.id, change))

    @put(
        "/password",
        status_code=HTTP_204_NO_CONTENT,
        summary="Change the caller's password",
        opt={RATE_LIMIT_OPT: PASSWORD_CHECK_POLICY},
        responses=problems(*BODY, 401, 429, 503),
    )
    async def change_password(
        self, request: AuthedRequest, data: JSONBody[PasswordChange], auth_service: NamedDependency[AccountService]
    ) -> None:
        await auth_service.change_password(
            request.user.id, request.auth.session_id, data.current_password, data.new_password, data.code
        )
