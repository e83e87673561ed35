"""The single-use tokens that links in mails carry (verification, password reset, email
change): issued, looked at, and redeemed.

A token is 256 random bits, shown once (in the mail) and stored only as its SHA-256: a
copy of the table gives nobody a working link. It is bound to its purpose and to the
account state it was issued against (``binding``), and redeeming it is one conditional
UPDATE, so two clicks on one link cannot both succeed."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import AccountToken, TokenPurpose, User, utcnow

TOKEN_BYTES = 32


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def binding_of(purpose: TokenPurpose, user: User) -> str:
    """The state a token of ``purpose`` stays valid with. The exact stored address, not its
    key: a link mailed to boss@ does not verify boß@, which a mail server may deliver
    elsewhere. A reset and an email change also bind the password hash, so any password
    change or reset ends them (so does a rehash at login after the hashing parameters were
    raised: such a link is asked for again)."""
    parts = [purpose.value, user.email]
    if purpose in (TokenPurpose.PASSWORD_RESET, TokenPurpose.EMAIL_CHANGE):
        # A password change (or reset) is what the notice of an email change tells its owner
        # to do: it must end a change someone with the old password asked for.
        parts.append(user.password_hash)
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class PendingToken:
    """A token that is unused and unexpired right now (it may still be bound to a state
    that has changed: the caller compares ``binding`` with the account)."""

    id: UUID
    user_id: UUID
    binding: str
    new_email: str | None


class AccountTokens:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def issue(self, user: User, purpose: TokenPurpose, ttl_seconds: int, *, new_email: str | None = None) -> str:
        """A new token for ``user``, added to the caller's transaction; the value is
        returned once and never stored."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = utcnow()
        self._session.add(
            AccountToken(
                user_id=user.id,
                purpose=purpose,
                token_hash=token_digest(token),
                binding=binding_of(purpose, user),
                new_email=new_email,
                created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl_seconds),
            )
        )
        await self._session.flush()
        return token

    async def find_pending(self, token: str, purpose: TokenPurpose) -> PendingToken | None:
        """The token, if it is of ``purpose``, unused and unexpired. Reading spends nothing:
        a page that shows a form (and a mail scanner that opens the link) looks only."""
        statement = select(AccountToken.id, AccountToken.user_id, AccountToken.binding, AccountToken.new_email).where(
            AccountToken.token_hash == token_digest(token),
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > utcnow(),
        )
        row = (await self._session.execute(statement)).one_or_none()
        return PendingToken(*row) if row else None

    async def redeem(self, pending: PendingToken) -> bool:
        """Spend the token in the caller's transaction; False if another request spent it
        first (or it expired meanwhile). One UPDATE with the conditions in its WHERE: of two
        concurrent redemptions exactly one changes the row."""
        statement = (
            update(AccountToken)
            .where(AccountToken.id == pending.id, AccountToken.used_at.is_(None), AccountToken.expires_at > utcnow())
            .values(used_at=utcnow())
        )
        result = await self._session.execute(statement)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def spend_all(self, user_id: UUID, purpose: TokenPurpose) -> None:
        """Every other unused token of this purpose ends with the one redeemed: the account
        state they were about has just been settled."""
        await self._session.execute(
            update(AccountToken)
            .where(AccountToken.user_id == user_id, AccountToken.purpose == purpose, AccountToken.used_at.is_(None))
            .values(used_at=utcnow())
        )

    async def revoke_all_of(self, user_id: UUID) -> None:
        """Deactivation and deletion: no link mailed before works again, even if the account
        comes back."""
        await self._session.execute(delete(AccountToken).where(AccountToken.user_id == user_id))


async def purge_finished_tokens(engine: AsyncEngine, *, ended_before: dt.datetime) -> int:
    """Housekeeping: delete tokens that were used or expired before ``ended_before``; no
    such token can ever be honoured again. Returns how many went."""
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(AccountToken).where((AccountToken.expires_at < ended_before) | (AccountToken.used_at < ended_before))
        )
    return int(result.rowcount or 0)
