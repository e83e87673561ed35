"""The mailed-link flows: email verification, password reset and email change.

Each request writes its token and its mail (to the outbox) in one transaction, so a mail
goes out if and only if the change it is about committed; the outbox worker sends it.
Each confirmation spends its token in the transaction of the change it makes. A token
is honoured only while the account is live and the state it was issued against is
unchanged (account_tokens.binding_of), and any refusal is the same InvalidAccountToken.

The two requests an outsider can aim at an address they do not own (a password reset
for any address; an email change to any address) answer before the account is looked
up: the part that depends on whether the address has an account runs after the
response (see the controllers), so neither the answer nor its timing can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from uuid import UUID

from app.accounts.account_tokens import AccountTokens, PendingToken, binding_of
from app.accounts.audit import AuditTrail
from app.accounts.mails import AccountMails
from app.accounts.password_checks import CurrentPasswordCheck
from app.accounts.repository import UserRepository
from app.accounts.sessions import LoginSessions, RevokeReason
from app.accounts.validation import email_key, normalize_email
from app.db.models import TokenPurpose, User
from app.errors import (
    AlreadyRegistered,
    FieldError,
    InvalidAccountToken,
    InvalidInput,
    UserNotFound,
)
from app.identity.password_policy import BreachedPasswordChecker, validate_new_password
from app.identity.passwords import PasswordHasher
from app.identity.throttle import LoginThrottle, account_throttle_key, throttle_key
from app.mail.outbox import enqueue
from app.observability.events import SecurityEvents
from app.settings import MailSettings, PasswordSettings, TokenSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.accounts.mfa import SecondFactor

_FLOW_OF = {
    TokenPurpose.VERIFY_EMAIL: "verify_email",
    TokenPurpose.PASSWORD_RESET: "password_reset",
    TokenPurpose.EMAIL_CHANGE: "email_change",
}


def parse_address(raw: str, field: str) -> str:
    """A well-formed address (normalised), or 422 naming ``field``. Refusing a malformed
    address tells nothing about accounts, so it happens before the 202."""
    address, problems = normalize_email(raw)
    if address is None:
        raise InvalidInput(errors=[FieldError(field, problem.message) for problem in problems])
    return address


@dataclass(frozen=True, slots=True)
class EmailChangeRequest:
    """What the deferred part of an email change needs, once the password is checked."""

    user_id: UUID
    new_email: str


class VerificationMailer:
    """Issues a verification token and queues its mail in the caller's transaction: used by
    registration (which sends one by itself) and by ``verify-email/request``."""

    def __init__(
        self, *, tokens: AccountTokens, mails: AccountMails, mail_settings: MailSettings, token_settings: TokenSettings
    ) -> None:
        self._tokens = tokens
        self._mails = mails
        self._mail_settings = mail_settings
        self._ttl = token_settings.verify_email_ttl_seconds

    async def queue(self, db: AsyncSession, user: User) -> None:
        token = await self._tokens.issue(user, TokenPurpose.VERIFY_EMAIL, self._ttl)
        mail = self._mails.verify_email(user.email, username=user.username, token=token, ttl_seconds=self._ttl)
        await enqueue(db, mail, self._mail_settings)


class AccountRecovery:
    def __init__(
        self,
        *,
        db: AsyncSession,
        users: UserRepository,
        sessions: LoginSessions,
        tokens: AccountTokens,
        mails: AccountMails,
        verification: VerificationMailer,
        password_check: CurrentPasswordCheck,
        second_factor: SecondFactor | None = None,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        events: SecurityEvents,
        mail_settings: MailSettings,
        token_settings: TokenSettings,
        password_settings: PasswordSettings,
        breach_checker: BreachedPasswordChecker,
        audit: AuditTrail | None = None,
    ) -> None:
        self._db = db
        self._audit = audit or AuditTrail(db)
        self._users = users
        self._sessions = sessions
        self._tokens = tokens
        self._mails = mails
        self._verification = verification
        self._password_check = password_check
        # With a second factor on, an email change needs one of its codes (app/accounts/mfa.py).
        self._second_factor = second_factor
        self._hasher = hasher
        self._throttle = throttle
        self._events = events
        self._mail_settings = mail_settings
        self._token_settings = token_settings
        self._password_settings = password_settings
        self._breach_checker = breach_checker

    # --- Email verification ------------------------------------------------------------

    async def request_verification(self, user_id: UUID) -> None:
        """A new verification mail to the caller's address; none when it is verified."""
        user = await self._users.get_live(user_id)
        if user.is_verified:
            await self._db.commit()
            self._events.account_flow_requested("verify_email", "already_verified", user.id)
            return
        await self._verification.queue(self._db, user)
        await self._db.commit()
        self._events.account_flow_requested("verify_email", "sent", user.id)

    async def confirm_verification(self, token: str) -> None:
        pending, user = await self._redeemable(token, TokenPurpose.VERIFY_EMAIL, lock=True)
        await self._spend(pending, user)
        user.is_verified = True
        await self._users.save(user)
        self._audit.record("email_verified", user.id)
        await self._db.commit()
        self._events.account_flow_confirmed("verify_email", user.id)

    # --- Password reset ----------------------------------------------------------------

    async def send_password_reset(self, address: str) -> None:
        """The part of a reset request that depends on the account: runs after the 202."""
        user = await self._users.find_by_email(address)
        if user is None or not user.can_authenticate:
            await self._db.commit()
            outcome = "unknown_address" if user is None else "inactive"
            self._events.account_flow_requested("password_reset", outcome, user.id if user else None)
            return
        ttl = self._token_settings.password_reset_ttl_seconds
        token = await self._tokens.issue(user, TokenPurpose.PASSWORD_RESET, ttl)
        # To the address on the account, whatever spelling was typed in the request.
        mail = self._mails.password_reset(user.email, username=user.username, token=token, ttl_seconds=ttl)
        await enqueue(self._db, mail, self._mail_settings)
        self._audit.record("password_reset_requested", user.id)
        await self._db.commit()
        self._events.account_flow_requested("password_reset", "sent", user.id)

    async def check_link_token(self, token: str, purpose: TokenPurpose) -> None:
        """InvalidAccountToken unless ``token`` could be used for ``purpose`` now. Spends
        nothing: the page a mailed link opens asks this before it shows its button or form,
        so a dead link says so at once."""
        await self._redeemable(token, purpose, lock=False)
        await self._db.commit()

    async def confirm_password_reset(self, token: str, new_password: str) -> None:
        """Set the password, end every session and clear the throttles. A weak password is
        refused (422) without spending the token, so the person can try another."""
        _, user = await self._redeemable(token, TokenPurpose.PASSWORD_RESET, lock=False)
        await self._db.commit()  # no connection held while the policy and the hash run
        password = await validate_new_password(
            new_password,
            username=user.username,
            settings=self._password_settings,
            breach_checker=self._breach_checker,
            field="new_password",
        )
        self._hasher.ensure_capacity("hash")
        password_hash = await self._hasher.hash(password)
        # Again under the row lock: the token may have been spent, or the password changed,
        # while the hash ran; then this reset is refused as any outdated link is.
        pending, user = await self._redeemable(token, TokenPurpose.PASSWORD_RESET, lock=True)
        await self._spend(pending, user)
        user.password_hash = password_hash
        # The link reached the account's address (the token is bound to it): it is verified.
        user.is_verified = True
        await self._users.save(user)
        await self._sessions.revoke_all_of(user.id, RevokeReason.PASSWORD_RESET)
        self._audit.record("password_reset", user.id)
        await self._db.commit()
        for key in (throttle_key(user.username), throttle_key(user.email_key), account_throttle_key(user.id)):
            await self._throttle.clear(key)
        self._events.account_flow_confirmed("password_reset", user.id)

    # --- Email change ------------------------------------------------------------------

    async def check_email_change(
        self, user_id: UUID, new_email: str, current_password: str, code: str | None = None
    ) -> EmailChangeRequest:
        """What can be refused in the answer itself: a malformed address, the account's own
        address, a wrong current password (throttled per account, like a password change),
        and with a second factor on a missing or wrong ``code``. Whether the new address is
        taken is not looked at here."""
        user = await self._users.get_live(user_id)
        await self._db.commit()  # not holding a connection while the hash waits
        address = parse_address(new_email, "new_email")
        # Another spelling of the same key (boss@ -> boß@) is a change like any other: a
        # mail server may deliver the two to different mailboxes, so the new spelling
        # proves itself with the link too.
        if address == user.email:
            raise InvalidInput(errors=[FieldError("new_email", "this is already the account's email address")])
        await self._password_check.check(user, current_password, purpose="email_change")
        if self._second_factor is not None:
            await self._second_factor.require_code(user, code, purpose="email_change")
        return EmailChangeRequest(user_id=user.id, new_email=address)

    async def send_email_change(self, request: EmailChangeRequest) -> None:
        """The part that depends on the new address: runs after the 202. A free address gets
        the confirmation link; a taken one gets a mail telling its owner; the old address is
        told in both cases."""
        try:
            user = await self._users.get_live(request.user_id)
        except UserNotFound:
            await self._db.commit()
            return
        if not user.can_authenticate:
            await self._db.commit()
            return
        owner = await self._users.find_by_email(request.new_email)
        taken = await self._users.taken_fields(username=None, email=request.new_email, exclude=user.id)
        if taken:
            # To the owner's own spelling, not the requester's: a real mailbox. An address
            # held by a deleted account has no owner to tell (and stays taken).
            if owner is not None:
                await enqueue(self._db, self._mails.email_change_taken(owner.email), self._mail_settings)
        else:
            ttl = self._token_settings.email_change_ttl_seconds
            token = await self._tokens.issue(user, TokenPurpose.EMAIL_CHANGE, ttl, new_email=request.new_email)
            mail = self._mails.email_change_confirm(
                request.new_email, username=user.username, token=token, ttl_seconds=ttl
            )
            await enqueue(self._db, mail, self._mail_settings)
        notice = self._mails.email_change_notice(user.email, username=user.username, new_email=request.new_email)
        await enqueue(self._db, notice, self._mail_settings)
        # The new address only when it was free: a taken one belongs to someone else.
        self._audit.record("email_change_requested", user.id, new_email=None if taken else request.new_email)
        await self._db.commit()
        self._events.account_flow_requested("email_change", "taken" if taken else "sent", user.id)

    async def confirm_email_change(self, token: str) -> None:
        pending, user = await self._redeemable(token, TokenPurpose.EMAIL_CHANGE, lock=True)
        new_email = pending.new_email
        if new_email is None:  # written with every email-change token; a damaged row
            self._refuse(pending.purpose_flow, "outdated", user.id)
        if await self._users.taken_fields(username=None, email=new_email, exclude=user.id):
            user_id = user.id
            await self._db.rollback()  # nothing changes; the token stays as it was
            self._events.account_flow_refused("email_change", "conflict", "taken", user_id)
            raise AlreadyRegistered(errors=[FieldError("email", "this email is already registered")])
        await self._spend(pending, user)
        old_email = user.email
        user.email, user.email_key, user.is_verified = new_email, email_key(new_email), True
        # A concurrent registration of the same address loses to the unique index: 409.
        await self._users.save(user)
        self._audit.record("email_changed", user.id, old_email=old_email, new_email=new_email)
        await self._db.commit()
        self._events.account_flow_confirmed("email_change", user.id)

    # --- Shared ------------------------------------------------------------------------

    async def _redeemable(self, token: str, purpose: TokenPurpose, *, lock: bool) -> tuple[_Pending, User]:
        """The token and its account, if the token could be spent now: unused, unexpired,
        of ``purpose``, its account live and in the state the token was issued against."""
        flow = _FLOW_OF[purpose]
        found = await self._tokens.find_pending(token, purpose)
        if found is None:
            self._refuse(flow, "unknown_or_spent")
        try:
            user = await self._users.get_live(found.user_id, lock=lock)
        except UserNotFound:
            self._refuse(flow, "deleted", found.user_id)
        if not user.can_authenticate:
            self._refuse(flow, "inactive", user.id)
        if binding_of(purpose, user) != found.binding:
            self._refuse(flow, "outdated", user.id)
        return _Pending(found, purpose, flow), user

    async def _spend(self, pending: _Pending, user: User) -> None:
        if not await self._tokens.redeem(pending.token):
            self._refuse(pending.purpose_flow, "spent_concurrently", user.id)
        # Every other link of this purpose settled with this one.
        await self._tokens.spend_all(user.id, pending.purpose)

    def _refuse(self, flow: str, reason: str, user_id: UUID | None = None) -> NoReturn:
        self._events.account_flow_refused(flow, "invalid_token", reason, user_id)
        raise InvalidAccountToken()


@dataclass(frozen=True, slots=True)
class _Pending:
    token: PendingToken
    purpose: TokenPurpose
    purpose_flow: str

    @property
    def new_email(self) -> str | None:
        return self.token.new_email
