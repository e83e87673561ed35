"""The check of a signed-in account's current password, before a password or email change."""

from __future__ import annotations

from app.db.models import User
from app.errors import HashingCapacityExceeded, PasswordChecksThrottled, WrongCurrentPassword
from app.identity.password_policy import normalize_password
from app.identity.passwords import PasswordHasher
from app.identity.throttle import LoginThrottle, Throttled, account_throttle_key
from app.observability.events import SecurityEvents


class CurrentPasswordCheck:
    """Raises WrongCurrentPassword unless the password is the account's. Checked under the
    same throttle as a login, keyed by the account (PasswordChecksThrottled): a stolen
    access token gets no more guesses than the login form gives. Shed like a login when
    the hashing pool is full."""

    def __init__(self, *, hasher: PasswordHasher, throttle: LoginThrottle, events: SecurityEvents) -> None:
        self._hasher = hasher
        self._throttle = throttle
        self._events = events

    async def check(self, user: User, password: str, *, purpose: str) -> None:
        try:
            async with self._throttle.check(account_throttle_key(user.id)) as check:
                result = await self._hasher.verify(user.password_hash, normalize_password(password))
                if result.matches:
                    check.succeeded()
                else:
                    check.failed()
        except Throttled as exc:
            self._events.password_check(purpose, "throttled", user.id, retry_after_seconds=exc.retry_after_seconds)
            raise PasswordChecksThrottled(exc.retry_after_seconds) from None
        except HashingCapacityExceeded:
            self._events.password_check(purpose, "shed", user.id)
            raise
        if not result.matches:
            block = check.counted.block_seconds if check.counted else 0
            self._events.password_check(purpose, "failed", user.id, block_seconds=block)
            raise WrongCurrentPassword()
        self._events.password_check(purpose, "success", user.id)
