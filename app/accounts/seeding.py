"""Bulk-insert test users for load tests: thousands in seconds, not one registration each.

Every seeded user gets the same password, so it is hashed once (argon2id with the
service's own parameters, so that a login never has to rehash it) and the rows go in with
one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` per batch: a rerun inserts only what
is missing. Usernames are ``{prefix}{i:06d}`` for i = 1..count and emails
``{prefix}{i:06d}@loadtest.invalid`` (RFC 2606 reserves ``.invalid``; the API refuses it
at registration, so no real sign-up can ever collide with a seeded account).

With ``with_totp`` each seeded account also gets a confirmed TOTP second factor whose
secret is derived from the shared password and the username (``derived_totp_secret``), so
that a load generator that knows the password computes the codes itself: the login's
second step is load-tested without enrolling thousands of accounts through the API. Such
a factor is exactly as strong as the shared password: it is for load-test accounts only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.accounts.repository import insert_users_ignoring_duplicates
from app.accounts.validation import email_key, username_problems
from app.container import Container
from app.db.models import MfaTotp, Role, User, utcnow
from app.errors import FieldError, InvalidInput
from app.identity.password_policy import normalize_password, password_problems
from app.identity.totp import SecretBox, derived_totp_secret
from app.settings import Settings

SEED_EMAIL_DOMAIN = "loadtest.invalid"
DEFAULT_PREFIX = "loadtest"
DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class SeedResult:
    requested: int
    inserted: int
    hash_seconds: float
    total_seconds: float
    second_factors: int = 0  # TOTP factors added (with_totp), to new or existing accounts

    @property
    def already_present(self) -> int:
        return self.requested - self.inserted


def seed_username(prefix: str, index: int) -> str:
    return f"{prefix}{index:06d}"


def seed_email(prefix: str, index: int) -> str:
    return f"{seed_username(prefix, index)}@{SEED_EMAIL_DOMAIN}"


def check_seed_request(settings: Settings, *, count: int, prefix: str, password: str) -> str:
    """The normalised password, or InvalidInput naming everything wrong with the request."""
    errors: list[FieldError] = []
    if count < 1:
        errors.append(FieldError("count", "must be at least 1"))
    for name in dict.fromkeys([seed_username(prefix, 1), seed_username(prefix, max(count, 1))]):
        errors += [
            FieldError("prefix", f"makes the username {name!r}, which {e.message}") for e in username_problems(name)
        ]
    normalized = normalize_password(password)
    # Registration's password rules, so a seeded account is one the API could have created.
    errors += password_problems(normalized, username=seed_username(prefix, 1), settings=settings.passwords)
    if errors:
        raise InvalidInput(errors=errors)
    return normalized


def _batches(prefix: str, count: int, password_hash: str, size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for index in range(1, count + 1):
        email = seed_email(prefix, index)
        batch.append(
            {
                "username": seed_username(prefix, index),
                "email": email,
                "email_key": email_key(email),
                "password_hash": password_hash,
                "role": Role.USER,
                "is_active": True,
                "is_verified": True,
            }
        )
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def seed_users(
    container: Container,
    *,
    count: int,
    password: str,
    prefix: str = DEFAULT_PREFIX,
    batch_size: int = DEFAULT_BATCH_SIZE,
    with_totp: bool = False,
) -> SeedResult:
    """Insert ``count`` users that log in with ``password``; existing ones are left alone,
    except that ``with_totp`` gives each seeded account without a second factor one."""
    started = time.perf_counter()
    normalized = check_seed_request(container.settings, count=count, prefix=prefix, password=password)
    hasher = container.hasher
    await hasher.start()
    try:
        hashed_at = time.perf_counter()
        password_hash = await hasher.hash(normalized)
        hash_seconds = time.perf_counter() - hashed_at
    finally:
        hasher.shutdown()

    engine = container.database.get_engine()
    inserted = second_factors = 0
    try:
        statement = insert_users_ignoring_duplicates(engine.dialect.name)
        async with engine.begin() as conn:
            for batch in _batches(prefix, count, password_hash, batch_size):
                # executemany with RETURNING: SQLAlchemy sends one multi-row VALUES per batch,
                # and only rows that were really inserted come back.
                inserted += len((await conn.execute(statement, batch)).all())
                if with_totp:
                    usernames = [row["username"] for row in batch]
                    second_factors += await _add_totp(conn, container.mfa_box, password, usernames)
    finally:
        await engine.dispose()
    return SeedResult(
        requested=count,
        inserted=inserted,
        hash_seconds=hash_seconds,
        total_seconds=time.perf_counter() - started,
        second_factors=second_factors,
    )


async def _add_totp(conn: AsyncConnection, box: SecretBox, password: str, usernames: list[str]) -> int:
    """A confirmed TOTP factor for each of ``usernames`` that has none (the secret sealed
    as enrolment seals it), and the account's flag on; how many were added."""
    statement = select(User.id, User.username).where(User.username.in_(usernames), User.mfa_enabled.is_(False))
    accounts = (await conn.execute(statement)).all()
    if not accounts:
        return 0
    now = utcnow()
    rows = [
        {
            "user_id": account.id,
            "secret": box.encrypt(derived_totp_secret(password, account.username), account.id),
            "created_at": now,
            "confirmed_at": now,
        }
        for account in accounts
    ]
    await conn.execute(insert(MfaTotp), rows)
    await conn.execute(update(User).where(User.id.in_([a.id for a in accounts])).values(mfa_enabled=True))
    return len(accounts)
