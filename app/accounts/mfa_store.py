"""The second factor's tables (mfa_totp, mfa_recovery_codes, mfa_challenges) and the
users.mfa_enabled flag: every query on them, and nothing that commits (use cases do).

Each "spend" (a code's time step, a recovery code, a challenge) is one conditional
UPDATE whose row count says whether this request won: of two concurrent uses of the same
code exactly one succeeds, on PostgreSQL and SQLite alike."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import MfaChallenge, MfaRecoveryCode, MfaTotp, Role, User, utcnow


@dataclass(frozen=True, slots=True)
class TotpFactor:
    secret: str  # encrypted
    confirmed: bool
    last_used_step: int | None


@dataclass(frozen=True, slots=True)
class PendingChallenge:
    """A login's second step as found by its token, with what redeeming it needs of the account."""

    id: UUID
    user_id: UUID
    binding: str
    expires_at: dt.datetime
    used: bool
    role: Role
    password_hash: str
    can_authenticate: bool
    mfa_enabled: bool


async def purge_ended_challenges(engine: AsyncEngine, *, ended_before: dt.datetime) -> int:
    """Housekeeping: delete login challenges that expired or were redeemed before
    ``ended_before``. A new challenge deletes its account's ended ones, but the last of
    every account that never logs in again would otherwise stay. Returns how many went."""
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(MfaChallenge).where(or_(MfaChallenge.expires_at < ended_before, MfaChallenge.used_at < ended_before))
        )
    return _rows(result)


def _rows(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class MfaStore:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def factor_of(self, user_id: UUID) -> TotpFactor | None:
        statement = select(MfaTotp.secret, MfaTotp.confirmed_at, MfaTotp.last_used_step).where(
            MfaTotp.user_id == user_id
        )
        row = (await self._db.execute(statement)).one_or_none()
        return TotpFactor(row.secret, row.confirmed_at is not None, row.last_used_step) if row else None

    async def put_pending(self, user_id: UUID, secret: str) -> None:
        """A new pending factor, replacing a pending one (never a confirmed one: the caller
        checked, and the WHERE holds it against a concurrent confirmation)."""
        await self._db.execute(delete(MfaTotp).where(MfaTotp.user_id == user_id, MfaTotp.confirmed_at.is_(None)))
        await self._db.execute(insert(MfaTotp).values(user_id=user_id, secret=secret, created_at=utcnow()))

    async def confirm(self, user_id: UUID, step: int, recovery_hashes: list[str]) -> bool:
        """Turn the pending factor on with the step of the code that confirmed it (that code
        cannot be replayed at login), set the account's flag and store fresh recovery codes.
        False if nothing was pending any more (a concurrent confirmation won)."""
        confirmed = await self._db.execute(
            update(MfaTotp)
            .where(MfaTotp.user_id == user_id, MfaTotp.confirmed_at.is_(None))
            .values(confirmed_at=utcnow(), last_used_step=step)
        )
        if _rows(confirmed) != 1:
            return False
        await self._db.execute(update(User).where(User.id == user_id).values(mfa_enabled=True))
        await self._db.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user_id))
        self._db.add_all(MfaRecoveryCode(user_id=user_id, code_hash=digest) for digest in recovery_hashes)
        await self._db.flush()
        return True

    async def advance_step(self, user_id: UUID, step: int) -> bool:
        """Record ``step`` as the last accepted, unless it (or a later one) already was:
        False is a replay."""
        result = await self._db.execute(
            update(MfaTotp)
            .where(
                MfaTotp.user_id == user_id,
                or_(MfaTotp.last_used_step.is_(None), MfaTotp.last_used_step < step),
            )
            .values(last_used_step=step)
        )
        return _rows(result) == 1

    async def reseal(self, user_id: UUID, secret: str) -> None:
        """The secret encrypted again with the current key (after a key rotation)."""
        await self._db.execute(update(MfaTotp).where(MfaTotp.user_id == user_id).values(secret=secret))

    async def spend_recovery_code(self, user_id: UUID, code_hash: str) -> bool:
        """Mark an unused recovery code used; False if there is none such (wrong or spent)."""
        result = await self._db.execute(
            update(MfaRecoveryCode)
            .where(
                MfaRecoveryCode.user_id == user_id,
                MfaRecoveryCode.code_hash == code_hash,
                MfaRecoveryCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
        )
        return _rows(result) >= 1

    async def unused_recovery_codes(self, user_id: UUID) -> int:
        statement = select(MfaRecoveryCode.id).where(
            MfaRecoveryCode.user_id == user_id, MfaRecoveryCode.used_at.is_(None)
        )
        return len((await self._db.execute(statement)).all())

    async def remove(self, user_id: UUID) -> None:
        """The factor off: its secret, recovery codes and open challenges go, the flag clears."""
        await self._db.execute(delete(MfaChallenge).where(MfaChallenge.user_id == user_id))
        await self._db.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user_id))
        await self._db.execute(delete(MfaTotp).where(MfaTotp.user_id == user_id))
        await self._db.execute(update(User).where(User.id == user_id).values(mfa_enabled=False))

    async def add_challenge(self, user_id: UUID, token_hash: str, binding: str, ttl_seconds: int) -> None:
        """A login's second step. The account's challenges that can no longer be redeemed
        go at the same time, so the table holds only the last few minutes' per account."""
        now = utcnow()
        await self._db.execute(
            delete(MfaChallenge).where(
                MfaChallenge.user_id == user_id,
                or_(MfaChallenge.expires_at <= now, MfaChallenge.used_at.is_not(None)),
            )
        )
        self._db.add(
            MfaChallenge(
                user_id=user_id,
                token_hash=token_hash,
                binding=binding,
                created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl_seconds),
            )
        )
        await self._db.flush()

    async def find_challenge(self, token_hash: str) -> PendingChallenge | None:
        statement = (
            select(
                MfaChallenge.id,
                MfaChallenge.user_id,
                MfaChallenge.binding,
                MfaChallenge.expires_at,
                MfaChallenge.used_at,
                User.role,
                User.password_hash,
                User.can_authenticate,
                User.mfa_enabled,
            )
            .join(User, User.id == MfaChallenge.user_id)
            .where(MfaChallenge.token_hash == token_hash)
        )
        row = (await self._db.execute(statement)).one_or_none()
        if row is None:
            return None
        return PendingChallenge(
            id=row.id,
            user_id=row.user_id,
            binding=row.binding,
            expires_at=row.expires_at,
            used=row.used_at is not None,
            role=row.role,
            password_hash=row.password_hash,
            can_authenticate=bool(row.can_authenticate),
            mfa_enabled=row.mfa_enabled,
        )

    async def spend_challenge(self, challenge_id: UUID) -> bool:
        result = await self._db.execute(
            update(MfaChallenge)
            .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
            .values(used_at=utcnow())
        )
        return _rows(result) == 1
