"""The HTTP surface of the mailed-link flows (API.md): /api/v1/auth/verify-email/*,
/password-reset/*, /email-change/confirm and /api/v1/users/me/email.

Requests that an outsider can aim at any address (a password reset; an email change to
an address) answer 202 before anything depends on whether the address has an account:
that part runs after the response is sent and outside the request's telemetry
(app/web/after_response.py), in a session of its own. A failure there is logged
(``after_response_failed``), never shown: the answer was already the same for everyone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app.accounts.authentication import AuthedRequest
from app.accounts.dependencies import account_recovery, provide_account_recovery
from app.accounts.recovery import AccountRecovery, parse_address
from app.accounts.schemas import (
    EmailChangeRequest,
    MailAccepted,
    PasswordResetConfirmation,
    PasswordResetRequest,
    TokenConfirmation,
)
from app.accounts.validation import email_key
from app.container import Container
from app.errors import MailRequestsThrottled
from app.observability.logging import get_logger
from app.web.after_response import Work, after_response
from app.web.openapi import BEARER, BODY, problems
from app.web.rate_limits import (
    LINK_CONFIRM_POLICY,
    MAIL_REQUEST_POLICY,
    PASSWORD_CHECK_POLICY,
    RATE_LIMIT_OPT,
    STORE_NAME,
    PerAddressMailLimit,
    client_address,
)

_log = get_logger("user_service.accounts")

RESET_ACCEPTED = "If an account has this address, a link to reset its password is on its way."
EMAIL_CHANGE_ACCEPTED = "A confirmation link is on its way to the new address; the current address is told."
VERIFICATION_ACCEPTED = "If the address is not verified yet, a new link is on its way."


async def limit_mails_to(request: Request[Any, Any, Any], container: Container, address: str) -> None:
    """Count a mail to ``address`` against its per-address limit (429 when over)."""
    limits = container.settings.rate_limits
    limit = PerAddressMailLimit(request.app.stores.get(STORE_NAME), limits.mail_per_address, enabled=limits.enabled)
    retry_after = await limit.hit(email_key(address))
    if retry_after is not None:
        container.events.rate_limited("mail_per_address", client_address(request))
        raise MailRequestsThrottled(retry_after)


def deferred(container: Container, work: Callable[[AccountRecovery], Awaitable[None]]) -> Work:
    """``work`` on the mailed-link use cases, in a database session of its own (the
    request's is closed by the time it runs)."""

    async def run() -> None:
        async with container.database.get_session() as db:
            await work(account_recovery(db, container))

    return run


async def after_the_answer(container: Container, work: Callable[[AccountRecovery], Awaitable[None]]) -> None:
    """Leave ``work`` for after the response (see app/web/after_response.py); outside a
    request, do it now."""
    run = deferred(container, work)
    if not after_response(run):
        await run()


class AccountLinksController(Controller):
    """The unauthenticated half: a reset request, and every link's confirmation."""

    path = "/api/v1/auth"
    tags = ["auth"]
    opt = {"exclude_from_auth": True}
    dependencies = {"recovery": Provide(provide_account_recovery, sync_to_thread=False)}

    @post(
        "/verify-email/confirm",
        status_code=HTTP_204_NO_CONTENT,
        opt={RATE_LIMIT_OPT: LINK_CONFIRM_POLICY},
        summary="Verify the account's address with the token from the mail",
        responses=problems(*BODY, 503),
    )
    async def confirm_verification(
        self, data: JSONBody[TokenConfirmation], recovery: NamedDependency[AccountRecovery]
    ) -> None:
        await recovery.confirm_verification(data.token)

    @post(
        "/password-reset/request",
        status_code=HTTP_202_ACCEPTED,
        summary="Mail a password-reset link (202 whether or not the address has an account)",
        opt={RATE_LIMIT_OPT: MAIL_REQUEST_POLICY},
        responses=problems(*BODY, 429),
    )
    async def request_password_reset(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PasswordResetRequest],
        container: NamedDependency[Container],
    ) -> Response[MailAccepted]:
        address = parse_address(data.email, "email")
        await limit_mails_to(request, container, address)

        async def send(recovery: AccountRecovery) -> None:
            await recovery.send_password_reset(address)

        await after_the_answer(container, send)
        return Response(MailAccepted(detail=RESET_ACCEPTED), status_code=HTTP_202_ACCEPTED)

    @post(
        "/password-reset/confirm",
        status_code=HTTP_204_NO_CONTENT,
        opt={RATE_LIMIT_OPT: LINK_CONFIRM_POLICY},
        summary="Set a new password with the token from the mail; every session ends",
        responses=problems(*BODY, 503),
    )
    async def confirm_password_reset(
        self, data: JSONBody[PasswordResetConfirmation], recovery: NamedDependency[AccountRecovery]
    ) -> None:
        await recovery.confirm_password_reset(data.token, data.new_password)

    @post(
        "/email-change/confirm",
        status_code=HTTP_204_NO_CONTENT,
        opt={RATE_LIMIT_OPT: LINK_CONFIRM_POLICY},
        summary="Move the account to its new address with the token from the mail",
        responses=problems(*BODY, 409, 503),
    )
    async def confirm_email_change(
        self, data: JSONBody[TokenConfirmation], recovery: NamedDependency[AccountRecovery]
    ) -> None:
        await recovery.confirm_email_change(data.token)


class VerificationRequestController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    security = [BEARER]
    dependencies = {"recovery": Provide(provide_account_recovery, sync_to_thread=False)}

    @post(
        "/verify-email/request",
        status_code=HTTP_202_ACCEPTED,
        summary="Mail a new verification link to the caller's address",
        opt={RATE_LIMIT_OPT: MAIL_REQUEST_POLICY},
        responses=problems(401, 429, 503),
    )
    async def request_verification(
        self, request: AuthedRequest, recovery: NamedDependency[AccountRecovery], container: NamedDependency[Container]
    ) -> MailAccepted:
        account = request.user.account
        if not account.is_verified:
            await limit_mails_to(request, container, account.email)
        await recovery.request_verification(request.user.id)
        return MailAccepted(detail=VERIFICATION_ACCEPTED)


class EmailChangeController(Controller):
    path = "/api/v1/users/me"
    tags = ["users"]
    security = [BEARER]
    dependencies = {"recovery": Provide(provide_account_recovery, sync_to_thread=False)}

    @post(
        "/email",
        status_code=HTTP_202_ACCEPTED,
        summary="Change the caller's email: a link to the new address confirms it",
        opt={RATE_LIMIT_OPT: (PASSWORD_CHECK_POLICY, MAIL_REQUEST_POLICY)},
        responses=problems(*BODY, 401, 429, 503),
    )
    async def request_email_change(
        self,
        request: AuthedRequest,
        data: JSONBody[EmailChangeRequest],
        recovery: NamedDependency[AccountRecovery],
        container: NamedDependency[Container],
    ) -> Response[MailAccepted]:
        change = await recovery.check_email_change(request.user.id, data.new_email, data.current_password, data.code)
        await limit_mails_to(request, container, change.new_email)

        async def send(deferred: AccountRecovery) -> None:
            await deferred.send_email_change(change)

        await after_the_answer(container, send)
        return Response(MailAccepted(detail=EMAIL_CHANGE_ACCEPTED), status_code=HTTP_202_ACCEPTED)
