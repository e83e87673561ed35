"""The bridge between a login's two steps: the ``mfa_token`` a right password earns on an
account with a second factor. Opaque (256 random bits), stored as its SHA-256, single use,
short-lived, and bound to the account and to the password hash that was checked: a
password change or reset in between voids it."""

from __future__ import annotations

from uuid import UUID

from app.accounts.mfa_store import MfaStore
from app.identity.totp import new_challenge, password_binding


class LoginChallenges:
    def __init__(self, store: MfaStore, ttl_seconds: int) -> None:
        self._store = store
        self._ttl_seconds = ttl_seconds

    async def issue(self, user_id: UUID, password_hash: str) -> str:
        """A new challenge in the caller's transaction (the login commits it); the token."""
        challenge = new_challenge()
        await self._store.add_challenge(
            user_id, challenge.token_hash, password_binding(password_hash), self._ttl_seconds
        )
        return challenge.token
