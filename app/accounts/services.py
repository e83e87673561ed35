"""The account use cases: registration, login, refresh, logout, password change and
profile change. Each owns its transaction and commits it; persistence is in
repository.py (users) and sessions.py (login sessions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from uuid import UUID

from app.accounts.audit import AuditTrail
from app.accounts.mfa_challenges import LoginChallenges
from app.accounts.notices import LoginNotices
from app.accounts.password_checks import CurrentPasswordCheck
from app.accounts.recovery import VerificationMailer
from app.accounts.repository import UserRepository
from app.accounts.sessions import ClientInfo, LoginSessions, RevokeReason, RotationOutcome
from app.accounts.validation import (
    email_key,
    normalize_email,
    normalize_full_name,
    normalize_login_identifier,
    normalize_username,
    username_problems,
)
from app.db.models import Role, User
from app.errors import (
    AlreadyRegistered,
    DomainError,
    FieldError,
    HashingCapacityExceeded,
    InvalidCredentials,
    InvalidInput,
    InvalidRefreshToken,
    LoginThrottled,
    MfaRequired,
    WrongCurrentPassword,
)
from app.identity.password_policy import BreachedPasswordChecker, normalize_password, validate_new_password
from app.identity.passwords import PasswordHasher
from app.identity.throttle import Check, LoginThrottle, Throttled, throttle_key
from app.identity.tokens import TokenIssuer
from app.observability.events import SecurityEvents
from app.settings import PasswordSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.accounts.mfa import SecondFactor

# How a login was authenticated (RFC 8176 values), in its session and its access tokens.
PASSWORD_ONLY = ("pwd",)

_REGISTRATION_RESULTS: dict[type[DomainError], str] = {
    InvalidInput: "invalid",
    AlreadyRegistered: "conflict",
    HashingCapacityExceeded: "shed",
}


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: UUID


@dataclass(frozen=True, slots=True)
class Registration:
    username: str
    email: str
    password: str
    full_name: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """``full_name`` changes only when ``set_full_name`` (so None can clear it)."""

    full_name: str | None = None
    set_full_name: bool = False


class AccountService:
    def __init__(
        self,
        *,
        db: AsyncSession,
        users: UserRepository,
        sessions: LoginSessions,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        password_settings: PasswordSettings,
        breach_checker: BreachedPasswordChecker,
        events: SecurityEvents,
        throttle: LoginThrottle,
        password_check: CurrentPasswordCheck,
        verification: VerificationMailer | None = None,
        notices: LoginNotices | None = None,
        audit: AuditTrail | None = None,
        challenges: LoginChallenges | None = None,
        second_factor: SecondFactor | None = None,
    ) -> None:
        self._db = db
        self._audit = audit or AuditTrail(db)
        self._refused_account: UUID | None = None
        # The second factor (app/accounts/mfa.py): a login of an account that has one ends
        # in a challenge; a password change needs a code too. None: the CLI's service.
        self._challenges = challenges
        self._second_factor = second_factor
        # None: no notice of logins from new clients (MAIL__NEW_LOGIN_NOTICE off).
        self._notices = notices
        self._password_check = password_check
        # None: registration sends no verification mail (the CLI's operator-made accounts).
        self._verification = verification
        self._throttle = throttle
        self._events = events
        self._users = users
        self._sessions = sessions
        self._hasher = hasher
        self._tokens = tokens
        self._password_settings = password_settings
        self._breach_checker = breach_checker

    async def register(self, data: Registration, *, role: Role = Role.USER, verified: bool = False) -> User:
        """Create a user. Every field problem is reported at once; uniqueness is checked
        before hashing (no work spent on a taken name) and again by the database. The API
        registers plain unverified users; an operator's CLI may create an admin."""
        try:
            user = await self._register(data, role, verified)
        except DomainError as exc:
            self._events.registration(_REGISTRATION_RESULTS.get(type(exc), "error"))
            raise
        self._events.registration("created", user.id)
        return user

    async def _register(self, data: Registration, role: Role, verified: bool) -> User:
        self._hasher.ensure_capacity("hash")
        username = normalize_username(data.username)
        errors: list[FieldError] = username_problems(username)
        email, email_errors = normalize_email(data.email)
        full_name, name_errors = normalize_full_name(data.full_name)
        errors += email_errors + name_errors
        password = normalize_password(data.password)
        try:
            password = await validate_new_password(
                password, username=username, settings=self._password_settings, breach_checker=self._breach_checker
            )
        except InvalidInput as exc:
            errors += exc.errors
        if errors or email is None:
            raise InvalidInput(errors=errors)
        if taken := await self._users.taken_fields(username=username, email=email):
            raise AlreadyRegistered(errors=taken)
        # End the read-only transaction so its connection is not held while the hash waits.
        await self._db.commit()
        password_hash = await self._hasher.hash(password)
        user = await self._users.insert_new(
            User(
                username=username,
                email=email,
                email_key=email_key(email),
                full_name=full_name,
                password_hash=password_hash,
                role=role,
                is_verified=verified,
            )
        )
        self._audit.record("registered", user.id)
        if self._verification is not None and not verified:
            # In the registration's transaction: no account without its mail, no mail
            # about an account that was not created.
            await self._verification.queue(self._db, user)
        await self._db.commit()
        return user

    async def login(self, identifier: str, password: str, client: ClientInfo | None = None) -> IssuedTokens:
        """Unknown user, wrong password and inactive user all cost one verify, count as a
        failure of the name typed, and raise the same InvalidCredentials. The check is
        reserved with the throttle first: a blocked name, or one whose single check beyond
        the free ones is still running, is refused before any of that (LoginThrottled),
        even when the pool is full."""
        normalized = normalize_login_identifier(identifier)
        check: Check | None = None
        try:
            async with self._throttle.check(throttle_key(normalized) if normalized else None) as check:
                return await self._checked_login(normalized, password, check, client or ClientInfo())
        except Throttled as exc:
            self._events.login_throttled(exc.failures, exc.retry_after_seconds)
            raise LoginThrottled(exc.retry_after_seconds) from None
        finally:
            if check is not None and check.counted and check.counted.block_seconds:
                self._events.login_throttle_engaged(check.counted.failures, check.counted.block_seconds)
                if self._refused_account is not None:
                    # The failure that blocked the name of a known account: its owner sees when
                    # (and from where) logins to it began to be refused.
                    await self._audit.defer(
                        "login_throttled",
                        self._refused_account,
                        failures=check.counted.failures,
                        block_seconds=check.counted.block_seconds,
                    )

    async def _checked_login(
        self, normalized: str | None, password: str, check: Check, client: ClientInfo
    ) -> IssuedTokens:
        try:
            self._hasher.ensure_capacity("verify")
        except HashingCapacityExceeded:
            self._events.login_failed("shed")
            raise
        # One read (its connection is back in the pool before the hash), one write.
        user = await self._users.find_credentials(normalized) if normalized else None
        password = normalize_password(password)
        try:
            if user is None:
                await self._hasher.verify_against_nothing(password)
                await self._refuse_login(check, "unknown_user")
            result = await self._hasher.verify(user.password_hash, password)
        except HashingCapacityExceeded:
            self._events.login_failed("shed", user.user_id if user else None)
            raise
        if not result.matches:
            await self._refuse_login(check, "wrong_password", user.user_id)
        if not user.can_authenticate:
            # Refused on the first read, exactly as a wrong password is: the same statements,
            # so the same time. Going on to the locked re-read first made a dead account with
            # the right password measurably slower (about 3 ms), which told an attacker that
            # the password was right. The re-read below still catches a change in between.
            await self._refuse_login(check, _inactive_reason(user.deleted_at), user.user_id)
        # The hash was verified against a read from before the wait for a worker; a password
        # change or deactivation may have committed since. Re-read under a share lock in
        # this transaction, so such a change is either seen now or waits for this session
        # and then revokes it: a session opened with an old password never survives. The
        # re-read is also the one place an inactive or deleted account is refused.
        current = await self._users.lock_credentials(user.user_id)
        if current is None or current.password_hash != user.password_hash:
            await self._refuse_login(check, "wrong_password", user.user_id)
        if not current.can_authenticate:
            await self._refuse_login(check, _inactive_reason(current.deleted_at), user.user_id)
        if result.needs_rehash:
            # Parameters were raised since this hash was made: upgrade it while we have the password.
            await self._users.set_password_hash(user.user_id, await self._hasher.hash(password))
        if current.mfa_enabled and self._challenges is not None:
            # The password was right: the name's failures end here as for any login, and
            # the client goes on at /login/mfa (whose wrong codes count per account).
            mfa_token = await self._challenges.issue(user.user_id, current.password_hash)
            await self._db.commit()
            check.succeeded()
            self._events.mfa_required(user.user_id)
            raise MfaRequired(mfa_token)
        issued = await self._start_session(user.user_id, current.role, client)
        self._audit.record("login_succeeded", user.user_id, session_id=str(issued.session_id))
        notified = self._notices is not None and await self._notices.after_login(
            self._db, self._sessions, self._users, user.user_id, client
        )
        await self._db.commit()
        if notified:
            self._events.new_client_login(user.user_id)
        check.succeeded()  # the name's count starts again once the throttle settles
        self._events.login_succeeded(user.user_id, rehashed=result.needs_rehash)
        return issued

    async def _refuse_login(self, check: Check, reason: str, user_id: UUID | None = None) -> NoReturn:
        check.failed()  # counted against the name when the throttle settles the check
        self._events.login_failed(reason, user_id)
        if user_id is not None:  # an unknown name is never written (see audit.py)
            await self._audit.defer("login_failed", user_id, reason=reason)
            self._refused_account = user_id
        raise InvalidCredentials()

    async def refresh(self, presented: str, client: ClientInfo | None = None) -> IssuedTokens:
        rotation = await self._sessions.rotate(presented, client)
        if rotation.outcome is RotationOutcome.REUSED and rotation.user is not None:
            self._audit.record("refresh_reuse_detected", rotation.user.id, session_id=str(rotation.session_id))
        # Commit before answering: the rotation, or on reuse the family's revocation, which
        # must survive the 401 that follows.
        await self._db.commit()
        user_id = rotation.user.id if rotation.user else None
        self._events.refresh(rotation.outcome.value, user_id, rotation.session_id)
        if rotation.outcome is not RotationOutcome.ROTATED:
            raise InvalidRefreshToken()
        if rotation.user is None or rotation.session_id is None or rotation.refresh_token is None:
            raise InvalidRefreshToken()
        access = self._tokens.issue_access(
            user_id=rotation.user.id, role=rotation.user.role, session_id=rotation.session_id, amr=rotation.amr
        )
        self._events.tokens_issued(access=1, refresh=1)
        return IssuedTokens(access.token, rotation.refresh_token, access.expires_in, rotation.session_id)

    async def logout(self, presented: str) -> None:
        """End the session the refresh token belongs to; unknown tokens are silently accepted."""
        found = await self._sessions.find_session_of(presented)
        # A token of a session that already ended is accepted the same way, and written
        # nowhere: replaying one must not pad its owner's trail.
        if found is not None and await self._sessions.revoke(found[0], RevokeReason.LOGOUT):
            session_id, user_id = found
            self._audit.record("logged_out", user_id, session_id=str(session_id))
            await self._db.commit()
            self._events.logged_out(user_id, session_id)

    async def change_password(
        self, user_id: UUID, current_session: UUID, current: str, new: str, code: str | None = None
    ) -> None:
        """Replace the password and end every other session of the user. The current
        password is checked under the same throttle as a login, keyed by the account: a
        stolen access token gets no more guesses than the login form gives. With a second
        factor on, ``code`` must be one of its codes too."""
        user = await self._users.get_live(user_id)
        await self._db.commit()  # not holding a connection while the hashes wait and run
        new_password = await validate_new_password(
            new,
            username=user.username,
            settings=self._password_settings,
            breach_checker=self._breach_checker,
            field="new_password",
        )
        await self._password_check.check(user, current, purpose="password_change")
        if self._second_factor is not None:
            await self._second_factor.require_code(user, code, purpose="password_change")
        # The hash is written before the sessions are revoked: the row lock it takes orders
        # it against concurrent logins (see login()).
        new_hash = await self._hasher.hash(new_password)
        if not await self._users.replace_password_hash(user.id, verified=user.password_hash, new=new_hash):
            # A reset (or another change) committed while the hashes ran: the password
            # checked is no longer the account's, and this change must not undo that one.
            raise WrongCurrentPassword()
        await self._sessions.revoke_all_of(user.id, RevokeReason.PASSWORD_CHANGE, keep=current_session)
        self._audit.record("password_changed", user.id)
        await self._db.commit()
        # Whoever was guessing the old password has nothing left to guess: the owner's
        # names are free again (the owner, logged in elsewhere, ends a throttle this way).
        for name in (user.username, user.email_key):  # the names login throttles by
            await self._throttle.clear(throttle_key(name))
        self._events.password_changed(user.id)

    async def update_profile(self, user_id: UUID, change: ProfileChange) -> User:
        """Change the full name. The email changes only through a confirmed link
        (recovery.py): an unconfirmed address must never become the account's."""
        user = await self._users.get_live(user_id)
        if change.set_full_name:
            new_name, name_errors = normalize_full_name(change.full_name)
            if name_errors:
                raise InvalidInput(errors=name_errors)
            user.full_name = new_name
        updated = await self._users.save(user)
        await self._db.commit()
        return updated

    async def _start_session(self, user_id: UUID, role: Role, client: ClientInfo) -> IssuedTokens:
        session_id, refresh_token = await self._sessions.start(user_id, client, amr=PASSWORD_ONLY)
        access = self._tokens.issue_access(user_id=user_id, role=role, session_id=session_id, amr=PASSWORD_ONLY)
        self._events.tokens_issued(access=1, refresh=1)
        return IssuedTokens(access.token, refresh_token, access.expires_in, session_id)


def _inactive_reason(deleted_at: object) -> str:
    return "deleted_user" if deleted_at else "inactive_user"
