"""The second factor's HTTP surface: /api/v1/auth/login/mfa (a login's second step) and
/api/v1/users/me/mfa/totp (enrol, confirm, disable)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from app.accounts.authentication import AuthedRequest
from app.accounts.controllers import NO_STORE
from app.accounts.dependencies import client_of, provide_mfa_login, provide_second_factor
from app.accounts.mfa import MfaLogin, SecondFactor
from app.accounts.schemas import (
    MfaLoginRequest,
    RecoveryCodes,
    TokenPair,
    TotpConfirmation,
    TotpEnrolment,
    TotpEnrolmentRequest,
    TotpRemoval,
)
from app.web.openapi import BEARER, BODY, problems
from app.web.rate_limits import PASSWORD_CHECK_POLICY, RATE_LIMIT_OPT


class MfaLoginController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    opt = {"exclude_from_auth": True}
    dependencies = {"mfa_login": Provide(provide_mfa_login, sync_to_thread=False)}

    @post(
        "/login/mfa",
        status_code=HTTP_200_OK,
        cache_control=NO_STORE,
        summary="Finish a login with the mfa_token of its 403 and a TOTP or recovery code",
        # The per-address login budget: the two steps of a login count as two logins.
        opt={RATE_LIMIT_OPT: "login"},
        responses=problems(*BODY, 401, 429, 503),
    )
    async def login_mfa(
        self, request: Request[Any, Any, Any], data: JSONBody[MfaLoginRequest], mfa_login: NamedDependency[MfaLogin]
    ) -> TokenPair:
        issued = await mfa_login.complete(data.mfa_token, data.code, client_of(request))
        return TokenPair(
            access_token=issued.access_token, refresh_token=issued.refresh_token, expires_in=issued.expires_in
        )


class MyTotpController(Controller):
    path = "/api/v1/users/me/mfa/totp"
    tags = ["users"]
    security = [BEARER]
    dependencies = {"second_factor": Provide(provide_second_factor, sync_to_thread=False)}

    @post(
        status_code=HTTP_200_OK,
        cache_control=NO_STORE,
        summary="Start enrolling a TOTP second factor (pending until confirmed)",
        opt={RATE_LIMIT_OPT: PASSWORD_CHECK_POLICY},
        responses=problems(*BODY, 401, 409, 429, 503),
    )
    async def enrol_totp(
        self,
        request: AuthedRequest,
        data: JSONBody[TotpEnrolmentRequest],
        second_factor: NamedDependency[SecondFactor],
    ) -> TotpEnrolment:
        enrolment = await second_factor.enrol(request.user.id, data.current_password)
        return TotpEnrolment(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)

    @post(
        "/confirm",
        status_code=HTTP_200_OK,
        cache_control=NO_STORE,
        summary="Confirm the pending factor with a code; returns ten recovery codes, shown once",
        responses=problems(*BODY, 401, 429, 503),
    )
    async def confirm_totp(
        self, request: AuthedRequest, data: JSONBody[TotpConfirmation], second_factor: NamedDependency[SecondFactor]
    ) -> RecoveryCodes:
        return RecoveryCodes(recovery_codes=await second_factor.confirm(request.user.id, data.code))

    @delete(
        status_code=HTTP_204_NO_CONTENT,
        summary="Turn the second factor off (the current password and a code)",
        opt={RATE_LIMIT_OPT: PASSWORD_CHECK_POLICY},
        responses=problems(*BODY, 401, 429, 503),
    )
    async def disable_totp(
        self, request: AuthedRequest, data: JSONBody[TotpRemoval], second_factor: NamedDependency[SecondFactor]
    ) -> None:
        await second_factor.disable(request.user.id, data.current_password, data.code)
