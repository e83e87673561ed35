"""The account pages that the links in mails open (API.md, "Mail and account pages"):
/account/verify-email, /account/reset-password and /account/confirm-email-change.

Server-rendered HTML from Jinja2 (Litestar's template support, templates/pages/), no script
at all, one stylesheet served from here. What keeps the token safe and the forms honest:

- Opening a page never spends its token (mail scanners and link previews open links);
  only the POST of its form does. Each page asks ``check_link_token``, which spends
  nothing, so a dead link says so before the person presses anything or types a password.
- The token goes from the GET to the POST as a hidden form field, not in the form's action
  URL: the page the POST answers with has no token in its address.
- The forms carry Litestar's CSRF token (a signed double-submit cookie), checked by
  CSRFMiddleware on this router only: the API's JSON endpoints are bearer-token and
  untouched. Its secret is derived from the token-signing key, so every replica checks
  what any other replica issued (see ``csrf_config``).
- Errors are pages in words: the API's problem handlers still decide status and headers
  (400 for a dead link, 403 for a failed CSRF check, 413, 429 and 503 with Retry-After),
  and page_errors.py renders them as HTML instead of problem+json under /account.
- The headers come from the outer chain (app/web/headers.py) like every response's: a
  strict CSP of their own, ``Referrer-Policy: no-referrer`` (the token in the address must
  never leave as a Referer), ``Cache-Control: no-store``. The access log names the route,
  never the URL, and spans get the query with ``token`` redacted (app/observability/tracing.py).

None of these pages is in the OpenAPI document (they are not API) or behind the bearer
authentication (the token in the link is the credential). No per-address rate limit: every
POST that costs anything (the reset's hash) needs a valid, unguessable token first, as the
JSON confirmations do, and the hashing pool sheds load with 503 on its own.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated

import msgspec
from jinja2 import Environment, PackageLoader, StrictUndefined
from litestar import Response, Router, get, post
from litestar.config.csrf import CSRFConfig
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.params import Body, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from app.accounts.dependencies import provide_account_recovery
from app.accounts.mails import CONFIRM_EMAIL_CHANGE_PAGE, RESET_PASSWORD_PAGE, VERIFY_EMAIL_PAGE
from app.accounts.recovery import AccountRecovery
from app.accounts.schemas import RawPassword, RawToken
from app.container import Container
from app.db.models import TokenPurpose
from app.errors import AlreadyRegistered, InvalidAccountToken, InvalidInput
from app.settings import Environment as DeploymentEnvironment
from app.settings import Settings
from app.web.rate_limits import LINK_CONFIRM_POLICY, RATE_LIMIT_OPT

PAGES_PATH = "/account"
STYLESHEET = f"{PAGES_PATH}/assets/account.css"
# Sent only to /account/...: the API never sees it.
CSRF_COOKIE = "account_csrf"
CSRF_SECRET_PURPOSE = "account-pages-csrf"  # noqa: S105 - the label the secret is derived under
_STYLESHEET_CACHE_CONTROL = "public, max-age=300"  # not content-addressed: five minutes of a stale copy

# The query parameter of the links in mails. Optional so that a link cut short shows the
# invalid-link page, not a validation error.
LinkToken = Annotated[str | None, QueryParameter(max_length=512)]


class LinkForm(msgspec.Struct):
    """The POST of a confirm button. Unknown fields (the form's ``_csrf_token``) are ignored."""

    token: RawToken


class PasswordResetForm(msgspec.Struct):
    token: RawToken
    new_password: RawPassword
    new_password_again: RawPassword


URL_ENCODED = Body(media_type=RequestEncodingType.URL_ENCODED)


def _relative(page: str) -> str:
    """A page's path below this router (mails.py holds the full paths the links use)."""
    if not page.startswith(PAGES_PATH + "/"):
        raise ValueError(f"{page} is not an account page")
    return page.removeprefix(PAGES_PATH)


def _link_token(token: str | None) -> str:
    if not token:
        raise InvalidAccountToken()
    return token


# --- Email verification --------------------------------------------------------------


@get(_relative(VERIFY_EMAIL_PAGE))
async def verify_email_page(recovery: NamedDependency[AccountRecovery], token: LinkToken = None) -> Template:
    usable = _link_token(token)
    await recovery.check_link_token(usable, TokenPurpose.VERIFY_EMAIL)  # spends nothing
    return Template("verify_email.html", context={"token": usable, "action": VERIFY_EMAIL_PAGE})


@post(_relative(VERIFY_EMAIL_PAGE), status_code=200, opt={RATE_LIMIT_OPT: LINK_CONFIRM_POLICY})
async def confirm_verification(
    data: Annotated[LinkForm, URL_ENCODED], recovery: NamedDependency[AccountRecovery]
) -> Template:
    await recovery.confirm_verification(data.token)
    return Template("email_verified.html")


# --- Password reset ------------------------------------------------------------------


def _reset_form(container: Container, token: str, problems: list[str] | None = None) -> Template:
    """The form with the new password twice; with ``problems`` (in words), a 422."""
    passwords = container.settings.passwords
    return Template(
        "reset_password.html",
        context={
            "token": token,
            "action": RESET_PASSWORD_PAGE,
            "problems": problems or [],
            "min_length": passwords.min_length,
            "max_length": passwords.max_length,
        },
        status_code=422 if problems else 200,
    )


def _in_words(refused: InvalidInput) -> list[str]:
    # The policy's messages read as the end of a sentence: "is too common; choose ...".
    return [
        f"The new password {error.message}." if error.field == "new_password" else f"{error.message}."
        for error in refused.errors
    ]


@get(_relative(RESET_PASSWORD_PAGE))
async def reset_password_page(
    recovery: NamedDependency[AccountRecovery], container: NamedDependency[Container], token: LinkToken = None
) -> Template:
    usable = _link_token(token)
    await recovery.check_link_token(usable, TokenPurpose.PASSWORD_RESET)  # spends nothing
    return _reset_form(container, usable)


@post(_relative(RESET_PASSWORD_PAGE), status_code=200, opt={RATE_LIMIT_OPT: LINK_CONFIRM_POLICY})
async def reset_password(
    data: Annotated[PasswordResetForm, URL_ENCODED],
    recovery: NamedDependency[AccountRecovery],
    container: NamedDependency[Container],
) -> Template:
    if data.new_password != data.new_password_again:
        # A dead link says so first: no point retyping passwords for it.
        await recovery.check_link_token(data.token, TokenPurpose.PASSWORD_RESET)
        return _reset_form(container, data.token, ["The two passwords are not the same."])
    try:
        await recovery.confirm_password_reset(data.token, data.new_password)
    except InvalidInput as refused:  # the token is not spent: the person tries another
        return _reset_form(container, data.token, _in_words(refused))
    return Template("password_reset_done.html")


# --- Email change --------------------------------------------------------------------


@get(_relative(CONFIRM_EMAIL_CHANGE_PAGE))
async def confirm_email_change_page(recovery: NamedDependency[AccountRecovery], token: LinkToken = None) -> Template:
    usable = _link_token(token)
    await recovery.check_link_token(usable, TokenPurpose.EMAIL_CHANGE)  # spends nothing
    return Template("confirm_email_change.html", context={"token": usable, "action": CONFIRM_EMAIL_CHANGE_PAGE})


@post(_relative(CONFIRM_EMAIL_CHANGE_PAGE), status_code=200, opt={RATE_LIMIT_OPT: LINK_CONFIRM_POLICY})
async def confirm_email_change(
    data: Annotated[LinkForm, URL_ENCODED], recovery: NamedDependency[AccountRecovery]
) -> Template:
    try:
        await recovery.confirm_email_change(data.token)
    except AlreadyRegistered:
        return Template("email_change_taken.html", status_code=409)
    return Template("email_changed.html")


# --- The stylesheet ------------------------------------------------------------------


@cache
def _stylesheet() -> bytes:
    return (resources.files("app.accounts") / "page_assets" / "account.css").read_bytes()


@get(
    STYLESHEET.removeprefix(PAGES_PATH),
    sync_to_thread=False,
    # Nothing to protect in a stylesheet: no cookie set on its answer.
    opt={"exclude_from_csrf": True},
)
def stylesheet() -> Response[bytes]:
    return Response(_stylesheet(), media_type="text/css", headers={"Cache-Control": _STYLESHEET_CACHE_CONTROL})


# --- Wiring --------------------------------------------------------------------------


def page_templates() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's template engine: the pages' templates, every value escaped."""
    environment = Environment(
        loader=PackageLoader("app.accounts", "templates/pages"), autoescape=True, undefined=StrictUndefined
    )
    environment.globals["stylesheet"] = STYLESHEET
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def csrf_config(settings: Settings, secret: str) -> CSRFConfig:
    """Litestar's CSRF protection, a double-submit cookie whose value and form field are
    both HMAC-signed with ``secret``: a page rendered by one replica is posted to whichever
    replica the load balancer picks, so the secret must be the same on all of them. It is
    derived from the token-signing key (TokenIssuer.derived_secret), which every replica
    already shares; rotating that key makes forms open at that moment fail once (403, the
    link still works when opened again).

    The cookie is Secure in production (served over HTTPS behind the ingress or nginx) and
    wherever the links in mails are https; plain http only in development and tests on
    loopback, where a Secure cookie would never come back. SameSite=Strict and HttpOnly:
    no other site's form sends it, and no script (there is none) reads it."""
    link_scheme = settings.mail.link_base_url.scheme
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        cookie_path=PAGES_PATH,
        cookie_secure=settings.environment is DeploymentEnvironment.PRODUCTION or link_scheme == "https",
        cookie_httponly=True,
        cookie_samesite="strict",
    )


def account_pages(settings: Settings, *, csrf_secret: str) -> Router:
    """The pages under /account with their CSRF check. Their errors are pages as well: the
    app's exception handlers answer so under PAGES_PATH (page_errors.py)."""
    return Router(
        path=PAGES_PATH,
        route_handlers=[
            verify_email_page,
            confirm_verification,
            reset_password_page,
            reset_password,
            confirm_email_change_page,
            confirm_email_change,
            stylesheet,
        ],
        dependencies={"recovery": Provide(provide_account_recovery, sync_to_thread=False)},
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf_config(settings, csrf_secret))],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
    )
