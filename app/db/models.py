"""The persistent model: users, login sessions (refresh-token families), refresh tokens,
the failed-login counters of the login throttle, the outbox of mail to send, and the
single-use tokens that links in those mails carry, and the second factor (TOTP, recovery
codes, login challenges)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from uuid import UUID

from advanced_alchemy.base import DefaultBase, UUIDv7AuditBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    false,
    func,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship


class Role(StrEnum):
    ADMIN = "admin"
    MODERATOR = "moderator"
    USER = "user"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class User(UUIDv7AuditBase):
    __tablename__ = "users"
    __table_args__ = (
        Index("ix_users_role", "role"),
        Index("ix_users_created_at", "created_at"),
    )

    username: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(320))
    # The address's canonical key (app/accounts/validation.py:email_key), written with
    # every email: uniqueness and login compare it, never the address. Case folding can
    # turn one character into three ("ΐ"), hence three times the address's length.
    email_key: Mapped[str] = mapped_column(String(960))
    full_name: Mapped[str | None] = mapped_column(String(200), default=None)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(
            Role,
            native_enum=False,
            length=16,
            create_constraint=True,
            name="role",
            values_callable=lambda roles: [r.value for r in roles],
        ),
        default=Role.USER,
    )
    is_active: Mapped[bool] = mapped_column(default=True)
    is_verified: Mapped[bool] = mapped_column(default=False)
    # A confirmed second factor (mfa_totp) is required at login. Kept on the row, in the
    # transaction that confirms or removes the factor, because login and every
    # authenticated request read this row anyway: no extra query for either.
    mfa_enabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Soft delete: the row (and its username and email) stays, the account is dead.
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    # The one rule for "this account may log in and use its sessions", in Python for a
    # loaded user and in SQL for queries that select it (login, every authenticated request).
    @hybrid_property
    def can_authenticate(self) -> bool:
        return self.is_active and self.deleted_at is None

    @can_authenticate.inplace.expression
    @classmethod
    def _can_authenticate_expression(cls) -> ColumnElement[bool]:
        return and_(cls.is_active.is_(True), cls.deleted_at.is_(None))


# Uniqueness is case-insensitive and enforced by the database itself, so two concurrent
# registrations of "Alice" and "alice" (or "ÄNNE@…" and "änne@…") cannot both commit.
# Login looks users up by these too. Usernames are ASCII (validation.USERNAME_PATTERN), so
# lower() folds them completely under any collation; emails are not, so their key is
# folded in Python (see User.email_key).
Index("uq_users_username_lower", func.lower(User.username), unique=True)
Index("uq_users_email_key", User.email_key, unique=True)


class AuthSession(UUIDv7Base):
    """One login: the family of refresh tokens that descend from it. Its id is the JWT ``sid``."""

    __tablename__ = "auth_sessions"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    # What a person sees in their list of sessions, kept current by every refresh: when the
    # session was last used, from which client address and user agent (cut to length),
    # and how its login was authenticated (``amr``, space-separated: "pwd", "pwd otp").
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(256), default=None)
    amr: Mapped[str] = mapped_column(String(32), default="pwd", server_default="pwd")

    user: Mapped[User] = relationship(lazy="raise")


class KnownClient(DefaultBase):
    """A (client address, user agent) pair an account has logged in from, as a digest: a
    login from a pair never seen before sends the owner a notice. Forgotten after
    ``TOKENS__KNOWN_CLIENT_DAYS`` without a login from it."""

    __tablename__ = "known_clients"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    client_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)


class RefreshToken(UUIDv7Base):
    """A refresh token, stored only as the SHA-256 of its value; spent on first use."""

    __tablename__ = "refresh_tokens"

    session_id: Mapped[UUID] = mapped_column(ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))
    spent_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    session: Mapped[AuthSession] = relationship(lazy="raise")


class LoginThrottleEntry(DefaultBase):
    """Consecutive failed logins against one account name (see app/identity/throttle.py).

    ``key`` is a SHA-256, never the name typed: attackers choose those strings, and a
    table of them would be a list of guessed usernames and emails."""

    __tablename__ = "login_throttle"
    __table_args__ = (Index("ix_login_throttle_last_failure_at", "last_failure_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))
    blocked_until: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Password checks reserved and not yet settled, valid while the lease runs; the
    # grant token tells a reservation whether the compare-and-set granted it.
    in_flight: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    grant_token: Mapped[str | None] = mapped_column(String(32), default=None)


class OutboxMessage(UUIDv7Base):
    """A mail to send, written in the transaction of the change it belongs to (app/mail/).

    The delivery worker claims due rows (``next_attempt_at`` passed, neither sent nor given
    up), sends them and marks them; ``message_id`` is fixed here, so a retry after an
    ambiguous failure carries the same Message-ID as the first try."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        # The worker's one query: unsent rows in the order they fall due. Partial, so the
        # index holds only the (few) pending rows, not every mail ever sent.
        Index(
            "ix_outbox_messages_due",
            "next_attempt_at",
            postgresql_where=text("sent_at IS NULL AND gave_up_at IS NULL"),
            sqlite_where=text("sent_at IS NULL AND gave_up_at IS NULL"),
        ),
    )

    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # What the mail is for (verify_email, password_reset, ...): a bounded label for logs and metrics.
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(255))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text, default=None)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    gave_up_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Why the last attempt failed (or why it was given up): an error class and the server's
    # reply, cut to length; never a setting's value.
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    # W3C traceparent of the request that wrote it: the delivery's span links to that trace.
    traceparent: Mapped[str | None] = mapped_column(String(64), default=None)


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a purpose, not a secret
    EMAIL_CHANGE = "email_change"


class AccountToken(UUIDv7Base):
    """A single-use token mailed in a link (app/accounts/account_tokens.py), stored only as
    the SHA-256 of its value.

    ``binding`` is a digest of the account state the token was issued against (the address
    it was mailed to; for a reset also the password hash): a token is only honoured while
    that state is unchanged, so a reset link dies with any password or email change, an
    email-change link with any email change, by whatever route."""

    __tablename__ = "account_tokens"
    __table_args__ = (Index("ix_account_tokens_user_id_purpose", "user_id", "purpose"),)

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[TokenPurpose] = mapped_column(
        Enum(
            TokenPurpose,
            native_enum=False,
            length=16,
            create_constraint=True,
            name="token_purpose",
            values_callable=lambda purposes: [p.value for p in purposes],
        )
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    binding: Mapped[str] = mapped_column(String(64))
    # The address an email change moves to (only for that purpose).
    new_email: Mapped[str | None] = mapped_column(String(320), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class SecurityEvent(UUIDv7Base):
    """The audit trail: one row per security event of an account (API.md's types), written
    in the transaction of the change it records where there is one. Append-only: the
    service never updates a row, and deletes only past the retention
    (``AUDIT__RETENTION_DAYS``). ``detail`` is small and never holds a secret."""

    __tablename__ = "security_events"
    __table_args__ = (
        Index("ix_security_events_user_id_at", "user_id", "at"),
        Index("ix_security_events_at", "at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Who did it, when not the account itself (an admin's role change, deletion, ...).
    actor_id: Mapped[UUID | None] = mapped_column(default=None)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(256), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)
    detail: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)


class MfaTotp(DefaultBase):
    """An account's TOTP factor: pending until a correct code confirms it.

    ``secret`` is encrypted (app/identity/totp.py SecretBox), never the base32 itself.
    ``last_used_step`` is the time step of the last code accepted: a code of that step or
    an earlier one is refused (no replay within its window)."""

    __tablename__ = "mfa_totp"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    last_used_step: Mapped[int | None] = mapped_column(BigInteger, default=None)


class MfaRecoveryCode(UUIDv7Base):
    """A single-use recovery code, stored as a SHA-256 (totp.hash_recovery_code)."""

    __tablename__ = "mfa_recovery_codes"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class MfaChallenge(UUIDv7Base):
    """The second step of a login whose password was right: the ``mfa_token`` (as its
    SHA-256), the account, and a digest of the password hash it was checked against."""

    __tablename__ = "mfa_challenges"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    binding: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class SchemaCompatibility(DefaultBase):
    """What the schema's head asks of the code reading it, written by every migration run
    (app/db/migrations/env.py): the oldest code head that still works with it, because
    every revision above that one only expands the schema. A replica of an older release,
    which cannot know the newer revisions, reads this at start-up to decide whether it
    may serve (app/db/migrate.py); without it a rollback after a migration is impossible."""

    __tablename__ = "schema_compatibility"

    head: Mapped[str] = mapped_column(String(32), primary_key=True)
    oldest_compatible: Mapped[str] = mapped_column(String(32))
