"""Bulk-insert test users for load tests: thousands in seconds, not one registration each.

Every seeded user gets the same password, so it is hashed once (argon2id with the
service's own parameters, so that a login never has to rehash it) and the rows go in with
one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` per batch: a rerun inserts only what
is missing. Usernames are ``{prefix}{i:06d}`` for i = 1..count and emails
``{prefix}{i:06d}@loadtest.invalid`` (RFC 2606 reserves ``.invalid``; the API refuses it
at registration, so no real sign-up can ever collide with a seeded account).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.accounts.repository import insert_users_ignoring_duplicates
from app.accounts.validation import email_key, username_problems
from app.container import Container
from app.db.models import Role
from app.errors import FieldError, InvalidInput
from app.identity.password_policy import normalize_password, password_problems
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
) -> SeedResult:
    """Insert ``count`` users that log in with ``password``; existing ones are left alone."""
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
    inserted = 0
    try:
        statement = insert_users_ignoring_duplicates(engine.dialect.name)
        async with engine.begin() as conn:
            for batch in _batches(prefix, count, password_hash, batch_size):
                # executemany with RETURNING: SQLAlchemy sends one multi-row VALUES per batch,
                # and only rows that were really inserted come back.
                inserted += len((await conn.execute(statement, batch)).all())
    finally:
        await engine.dispose()
    return SeedResult(
        requested=count,
        inserted=inserted,
        hash_seconds=hash_seconds,
        total_seconds=time.perf_counter() - started,
    )
