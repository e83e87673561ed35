"""The mails the account flows send, rendered from Jinja2 templates (text and HTML) in
templates/mail/. Links start with ``MAIL__LINK_BASE_URL`` and carry the token as the
query parameter ``token`` of the account page that uses it (API.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from app.mail.outbox import OutgoingMail
from app.settings import MailSettings

# Where each link goes: the pages in app/accounts/pages.py.
VERIFY_EMAIL_PAGE = "/account/verify-email"
RESET_PASSWORD_PAGE = "/account/reset-password"  # noqa: S105 - a path
CONFIRM_EMAIL_CHANGE_PAGE = "/account/confirm-email-change"


@dataclass(frozen=True, slots=True)
class _Template:
    kind: str
    subject: str


VERIFY_EMAIL = _Template("verify_email", "Confirm your email address")
PASSWORD_RESET = _Template("password_reset", "Reset your password")
EMAIL_CHANGE_CONFIRM = _Template("email_change_confirm", "Confirm your new email address")
EMAIL_CHANGE_TAKEN = _Template("email_change_taken", "Someone tried to use this address")
EMAIL_CHANGE_NOTICE = _Template("email_change_notice", "Your email address is being changed")
NEW_LOGIN = _Template("new_login", "New sign-in to your account")
SECOND_FACTOR_REMOVED = _Template("second_factor_removed", "The second factor of your account was removed")


# Built once per process: it compiles each template on first use and keeps it. Escaping
# follows the template's name: every value in an .html body is escaped (a full name or a
# user agent is someone's own text); .txt bodies are plain text and need none.
_TEMPLATES = Environment(
    loader=PackageLoader("app.accounts", "templates/mail"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=False),
    undefined=StrictUndefined,
)


class AccountMails:
    def __init__(self, settings: MailSettings, *, service_name: str = "User Service") -> None:
        self._settings = settings
        self._service_name = service_name

    def link(self, page: str, token: str) -> str:
        base = str(self._settings.link_base_url).rstrip("/")
        return f"{base}{page}?{urlencode({'token': token})}"

    def verify_email(self, to: str, *, username: str, token: str, ttl_seconds: int) -> OutgoingMail:
        return self._render(
            VERIFY_EMAIL,
            to,
            username=username,
            link=self.link(VERIFY_EMAIL_PAGE, token),
            valid_for=_duration(ttl_seconds),
        )

    def password_reset(self, to: str, *, username: str, token: str, ttl_seconds: int) -> OutgoingMail:
        return self._render(
            PASSWORD_RESET,
            to,
            username=username,
            link=self.link(RESET_PASSWORD_PAGE, token),
            valid_for=_duration(ttl_seconds),
        )

    def email_change_confirm(self, to: str, *, username: str, token: str, ttl_seconds: int) -> OutgoingMail:
        return self._render(
            EMAIL_CHANGE_CONFIRM,
            to,
            username=username,
            link=self.link(CONFIRM_EMAIL_CHANGE_PAGE, token),
            valid_for=_duration(ttl_seconds),
        )

    def email_change_taken(self, to: str) -> OutgoingMail:
        """To the owner of an address someone else tried to move their account to: the
        requester is told nothing (202 either way), the owner is told everything."""
        return self._render(EMAIL_CHANGE_TAKEN, to)

    def email_change_notice(self, to: str, *, username: str, new_email: str) -> OutgoingMail:
        """To the old address: if the owner did not ask, this is how they find out."""
        return self._render(EMAIL_CHANGE_NOTICE, to, username=username, new_email=new_email)

    def new_login(self, to: str, *, username: str, ip: str | None, user_agent: str | None) -> OutgoingMail:
        """To the account's address, on a login from a client pair never seen for it. The
        user agent is the client's own text: the HTML body escapes it."""
        return self._render(NEW_LOGIN, to, username=username, ip=ip, user_agent=user_agent)

    def second_factor_removed(self, to: str, *, username: str) -> OutgoingMail:
        """To the account's address, when an admin removed its second factor: signing in
        needs only the password from now on, and the owner may not have asked."""
        return self._render(SECOND_FACTOR_REMOVED, to, username=username)

    def _render(self, template: _Template, to: str, **values: Any) -> OutgoingMail:
        values["service_name"] = self._service_name
        return OutgoingMail(
            kind=template.kind,
            recipient=to,
            subject=template.subject,
            text_body=_TEMPLATES.get_template(f"{template.kind}.txt").render(values),
            html_body=_TEMPLATES.get_template(f"{template.kind}.html").render(values),
        )


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour" + ("s" if hours != 1 else "")
    minutes = max(1, seconds // 60)
    return f"{minutes} minute" + ("s" if minutes != 1 else "")
