"""The second factor's use cases: enrol, confirm, disable, require a code for a sensitive
change, and the second step of a login (/login/mfa). Each owns its transaction.

Every code check (a login's second step, a confirmation, a disabling, a sensitive change)
runs under the login throttle keyed by the *account* (``account_throttle_key``), the key
that wrong current passwords count against too. Not the login name: a right password
clears the name's counter, so keying codes by name would let someone who guessed the
password reset their code guesses with every login. The account's key is cleared only by
a right code or password of that account. So a guessed password buys ``free_attempts``
code guesses and then one per back-off delay: about 3 in 10^6 per guess, never a sweep.

No step here verifies a password hash except enrolment's and disabling's own current
password checks: the second step of a login costs an HMAC and a few indexed statements.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from app.accounts.audit import AuditTrail
from app.accounts.mfa_store import MfaStore, PendingChallenge, TotpFactor
from app.accounts.notices import LoginNotices
from app.accounts.password_checks import CurrentPasswordCheck
from app.accounts.repository import UserRepository
from app.accounts.services import IssuedTokens
from app.accounts.sessions import ClientInfo, LoginSessions
from app.db.models import User, utcnow
from app.errors import (
    InvalidMfaCode,
    InvalidMfaToken,
    MfaAlreadyEnabled,
    MfaCodeRejected,
    MfaCodesThrottled,
    MfaNotEnabled,
    NoPendingEnrolment,
)
from app.identity.throttle import LoginThrottle, Throttled, account_throttle_key
from app.identity.tokens import TokenIssuer
from app.identity.totp import (
    SecretBox,
    hash_challenge,
    hash_recovery_code,
    looks_like_totp_code,
    matching_step,
    new_recovery_codes,
    new_totp_secret,
    password_binding,
    provisioning_uri,
)
from app.observability.events import SecurityEvents
from app.settings import MfaSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

# How a login with both factors was authenticated (RFC 8176), in its session and tokens.
PASSWORD_AND_OTP = ("pwd", "otp")
_ACCEPTED = frozenset({"success", "recovery_code"})


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str
    otpauth_uri: str


class SecondFactor:
    def __init__(
        self,
        *,
        db: AsyncSession,
        users: UserRepository,
        store: MfaStore,
        box: SecretBox,
        password_check: CurrentPasswordCheck,
        throttle: LoginThrottle,
        events: SecurityEvents,
        settings: MfaSettings,
        audit: AuditTrail | None = None,
    ) -> None:
        self._db = db
        self._audit = audit or AuditTrail(db)
        self._users = users
        self._store = store
        self._box = box
        self._password_check = password_check
        self._throttle = throttle
        self._events = events
        self._settings = settings

    async def enrol(self, user_id: UUID, current_password: str) -> Enrolment:
        """A new secret, pending until confirm() sees a code of it; replaces a pending one.
        MfaAlreadyEnabled while a confirmed factor is on; WrongCurrentPassword (throttled
        per account) for a wrong password."""
        user = await self._users.get_live(user_id)
        await self._refuse_if_enabled(user_id)
        await self._db.commit()  # no connection held while the hash waits and runs
        try:
            await self._password_check.check(user, current_password, purpose="mfa_enrol")
        except Exception:
            self._events.mfa_enrolment("refused", user_id)
            raise
        # Under the account's row lock, as confirm() and disable() take it: an enrolment
        # never replaces a factor that was confirmed while the password was checked.
        await self._users.get_live(user_id, lock=True)
        await self._refuse_if_enabled(user_id)
        secret = new_totp_secret()
        await self._store.put_pending(user_id, self._box.encrypt(secret, user_id))
        await self._db.commit()
        self._events.mfa_enrolment("started", user_id)
        return Enrolment(
            secret=secret,
            otpauth_uri=provisioning_uri(secret, account_name=user.username, issuer=self._settings.issuer),
        )

    async def confirm(self, user_id: UUID, code: str) -> list[str]:
        """Turn the pending factor on with a code of its secret; the ten recovery codes,
        shown this once (the database keeps only their hashes)."""
        await self._users.get_live(user_id, lock=True)
        factor = await self._store.factor_of(user_id)
        if factor is None or factor.confirmed:
            raise NoPendingEnrolment()
        secret, _ = self._box.decrypt(factor.secret, user_id)
        steps: list[int] = []

        async def verify() -> str:
            step = matching_step(secret, code)
            if step is None:
                return "failed"
            steps.append(step)
            return "success"

        if await self._checked(user_id, "confirm", verify) not in _ACCEPTED:
            raise InvalidMfaCode()
        codes = new_recovery_codes()
        if not await self._store.confirm(user_id, steps[0], [hash_recovery_code(c, user_id) for c in codes]):
            raise NoPendingEnrolment()
        self._audit.record("mfa_enabled", user_id)
        await self._db.commit()
        self._events.mfa_enrolment("confirmed", user_id)
        return codes

    async def disable(self, user_id: UUID, current_password: str, code: str) -> None:
        """Turn the factor off: the current password and a code (TOTP or recovery) are both
        needed, so neither a stolen session nor a stolen phone alone can do it."""
        user = await self._users.get_live(user_id)
        factor = await self._store.factor_of(user_id)
        if factor is None or not factor.confirmed:
            raise MfaNotEnabled()
        await self._db.commit()
        await self._password_check.check(user, current_password, purpose="mfa_disable")
        if await self.check_code(user_id, factor, code, purpose="disable") not in _ACCEPTED:
            raise InvalidMfaCode()
        await self._users.get_live(user_id, lock=True)
        await self._store.remove(user_id)
        self._audit.record("mfa_disabled", user_id)
        await self._db.commit()
        self._events.mfa_disabled(user_id)

    async def require_code(self, user: User, code: str | None, *, purpose: str) -> None:
        """For a sensitive change (password, email): with the factor on, a valid code is
        required too (InvalidMfaCode otherwise). The code is spent and committed before the
        change is made (see _spend)."""
        if not user.mfa_enabled:
            return
        factor = await self._store.factor_of(user.id)
        if factor is None or not factor.confirmed:
            return
        if not code:
            self._events.mfa_challenge(purpose, "failed", user.id)
            raise InvalidMfaCode("This account has a second factor: send a code from your authenticator app too.")
        if await self.check_code(user.id, factor, code, purpose=purpose) not in _ACCEPTED:
            raise InvalidMfaCode()

    async def check_code(self, user_id: UUID, factor: TotpFactor, code: str, *, purpose: str) -> str:
        """One code of a confirmed factor checked under the account's throttle: success (a
        TOTP code, its step now recorded), recovery_code (now spent), failed or replayed."""
        return await self._checked(user_id, purpose, lambda: self._spend(user_id, factor, code, purpose))

    async def _spend(self, user_id: UUID, factor: TotpFactor, code: str, purpose: str) -> str:
        """_verify, then its outcome made final before the throttle settles: a code that
        was good is committed as spent (with the audit row of a recovery code), anything
        else is rolled back. The throttle settles on a connection of its own, and SQLite
        lets one transaction write at a time: with the spend still open, the settlement
        waited for this transaction's lock until it timed out, so every right code was
        answered 503 on the embedded database. Committed first, a code is never good twice,
        even when what it was for fails afterwards (a password changed meanwhile)."""
        result = await self._verify(user_id, factor, code)
        if result in _ACCEPTED:
            if result == "recovery_code":
                self._audit.record("recovery_code_used", user_id, purpose=purpose)
            await self._db.commit()
        else:
            # A replayed code's UPDATE matched no row, but on SQLite it took the write lock.
            await self._db.rollback()
        return result

    async def _refuse_if_enabled(self, user_id: UUID) -> None:
        factor = await self._store.factor_of(user_id)
        if factor is not None and factor.confirmed:
            self._events.mfa_enrolment("refused", user_id)
            raise MfaAlreadyEnabled()

    async def _checked(self, user_id: UUID, purpose: str, verify: Callable[[], Awaitable[str]]) -> str:
        """Run ``verify`` (which answers success, recovery_code, failed or replayed) as one
        check under the account's throttle; MfaCodesThrottled when it is blocked."""
        try:
            async with self._throttle.check(account_throttle_key(user_id)) as check:
                result = await verify()
                if result in _ACCEPTED:
                    check.succeeded()
                else:
                    check.failed()
        except Throttled as exc:
            self._events.mfa_challenge(purpose, "throttled", user_id, retry_after_seconds=exc.retry_after_seconds)
            raise MfaCodesThrottled(exc.retry_after_seconds) from None
        block = check.counted.block_seconds if check.counted else 0
        self._events.mfa_challenge(purpose, result, user_id, **({"block_seconds": block} if block else {}))
        return result

    async def _verify(self, user_id: UUID, factor: TotpFactor, code: str) -> str:
        """A TOTP code of a step later than the last one accepted (recorded now), or an
        unused recovery code (spent now), in the caller's transaction."""
        secret, stale_key = self._box.decrypt(factor.secret, user_id)
        step = matching_step(secret, code)
        if step is not None:
            if not await self._store.advance_step(user_id, step):
                return "replayed"
            if stale_key:
                # Sealed with a previous key: sealed again with the current one, so that the
                # previous key can be retired once every active account has logged in.
                await self._store.reseal(user_id, self._box.encrypt(secret, user_id))
            return "success"
        if not looks_like_totp_code(code) and await self._store.spend_recovery_code(
            user_id, hash_recovery_code(code, user_id)
        ):
            return "recovery_code"
        return "failed"


class MfaLogin:
    """POST /login/mfa: the ``mfa_token`` of a right password and a code give the session."""

    def __init__(
        self,
        *,
        db: AsyncSession,
        users: UserRepository,
        store: MfaStore,
        factor: SecondFactor,
        sessions: LoginSessions,
        tokens: TokenIssuer,
        events: SecurityEvents,
        notices: LoginNotices | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self._db = db
        self._audit = audit or AuditTrail(db)
        self._users = users
        self._store = store
        self._factor = factor
        self._sessions = sessions
        self._tokens = tokens
        self._events = events
        self._notices = notices

    async def complete(self, mfa_token: str, code: str, client: ClientInfo) -> IssuedTokens:
        """InvalidMfaToken for a bad, expired, used or outdated token (log in again);
        MfaCodeRejected for a wrong or replayed code (the token stays good: the account's
        throttle, not the token, bounds the tries); MfaCodesThrottled when blocked."""
        challenge = await self._store.find_challenge(hash_challenge(mfa_token))
        factor = await self._store.factor_of(challenge.user_id) if challenge else None
        await self._db.commit()  # not holding a connection while the throttle waits
        if challenge is None or factor is None or not factor.confirmed or not _redeemable(challenge):
            self._events.mfa_challenge("login", "invalid_token", challenge.user_id if challenge else None)
            raise InvalidMfaToken()
        user_id = challenge.user_id
        if await self._factor.check_code(user_id, factor, code, purpose="login") not in _ACCEPTED:
            await self._db.rollback()
            await self._audit.defer("login_failed", user_id, reason="wrong_mfa_code")
            raise MfaCodeRejected()
        # The password state the token was bound to, re-read under a share lock as login()
        # does: a password change or deactivation either committed before (and voids the
        # token now) or waits for this session and then revokes it.
        current = await self._users.lock_credentials(user_id)
        if (
            current is None
            or not current.can_authenticate
            or not hmac.compare_digest(challenge.binding, password_binding(current.password_hash))
            or not await self._store.spend_challenge(challenge.id)
        ):
            await self._db.rollback()
            raise InvalidMfaToken()
        session_id, refresh_token = await self._sessions.start(user_id, client, amr=PASSWORD_AND_OTP)
        access = self._tokens.issue_access(
            user_id=user_id, role=current.role, session_id=session_id, amr=PASSWORD_AND_OTP
        )
        self._audit.record("login_succeeded", user_id, session_id=str(session_id), amr=" ".join(PASSWORD_AND_OTP))
        notified = self._notices is not None and await self._notices.after_login(
            self._db, self._sessions, self._users, user_id, client
        )
        await self._db.commit()
        if notified:
            self._events.new_client_login(user_id)
        self._events.tokens_issued(access=1, refresh=1)
        self._events.login_succeeded(user_id, rehashed=False)
        return IssuedTokens(access.token, refresh_token, access.expires_in, session_id)


def _redeemable(challenge: PendingChallenge) -> bool:
    return (
        not challenge.used
        and challenge.expires_at > utcnow()
        and challenge.can_authenticate
        and challenge.mfa_enabled
        and hmac.compare_digest(challenge.binding, password_binding(challenge.password_hash))
    )
