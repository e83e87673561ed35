"""one canonical key per email (NFKC, case folded) replaces the lower(email) index

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

lower() folds only ASCII under the C collation (CloudNativePG's default, and SQLite's
only behaviour) and never folds "ß" to "ss", so "ÄNNE@…" and "änne@…", or "boss@…" and
"boß@…", were two accounts. ``users.email_key`` holds the key computed in Python and
carries the unique index instead.

Collisions: existing rows whose emails share a key were registered as different
accounts, and no rule can pick which of them keeps the address without taking it from a
real person. So the upgrade refuses, before it changes anything, with an error that lists
the key's user ids (ids only: emails stay out of deploy logs), and an operator resolves
each group (changes or deletes all but one, e.g. with
``UPDATE users SET email = ... WHERE id = ...``) and runs it again.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from uuid import UUID

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Whether replicas of the previous release keep working on this schema (app/db/migrate.py).
# A NOT NULL column the previous release never writes: its registrations would fail.
backward_compatible = False

_USERS = sa.table(
    "users",
    sa.column("id", GUID(length=16)),
    sa.column("email", sa.String()),
    sa.column("email_key", sa.String()),
    sa.column("created_at", sa.String()),  # only ordered by: its type does not matter
)


# SQLite cannot add NOT NULL in place to a column without a default: the column gets
# DEFAULT '' and these refuse that default on every write. Written out, not formatted:
# constant statements (the scanners refuse SQL built from strings).
_SQLITE_TRIGGERS = (
    (
        "CREATE TRIGGER users_email_key_required_on_insert BEFORE INSERT ON users "
        "WHEN NEW.email_key = '' "
        "BEGIN SELECT RAISE(ABORT, 'users.email_key must be set with the email'); END",
        "DROP TRIGGER users_email_key_required_on_insert",
    ),
    (
        "CREATE TRIGGER users_email_key_required_on_update BEFORE UPDATE ON users "
        "WHEN NEW.email_key = '' "
        "BEGIN SELECT RAISE(ABORT, 'users.email_key must be set with the email'); END",
        "DROP TRIGGER users_email_key_required_on_update",
    ),
)


class EmailKeyCollision(RuntimeError):
    """Existing accounts whose emails are one address once folded; nothing was changed."""


def _email_key(address: str) -> str:
    # A frozen copy of app/accounts/validation.py:email_key as it is at this revision. A
    # migration must backfill the same keys whenever it runs, even after the application's
    # function changes; and app.db may not import a feature (the import contracts).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address).casefold())


def _keys_or_refuse() -> dict[UUID, str]:
    """Every user's key by id, or EmailKeyCollision naming each group that shares one."""
    rows = op.get_bind().execute(sa.select(_USERS.c.id, _USERS.c.email).order_by(_USERS.c.created_at, _USERS.c.id))
    keys: dict[UUID, str] = {}
    sharing: defaultdict[str, list[str]] = defaultdict(list)
    for user_id, email in rows:
        keys[user_id] = _email_key(email)
        sharing[keys[user_id]].append(str(user_id))
    collisions = [ids for ids in sharing.values() if len(ids) > 1]
    if collisions:
        groups = "; ".join(", ".join(ids) for ids in collisions)
        raise EmailKeyCollision(
            f"{len(collisions)} group(s) of users have emails that are one address once case-folded "
            f"(user ids, oldest first, per group: {groups}). Give all but one of each group another "
            "email (or delete them), then run the upgrade again. Nothing was changed."
        )
    return keys


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # Refuse before any DDL: SQLite commits ALTER TABLE at once, so a refusal after it
    # would leave a half-migrated table that the rerun trips over.
    _keys_or_refuse()
    # SQLite can make a column NOT NULL only when it adds it with a default, or by
    # rebuilding the table, which with foreign keys on would cascade the drop of users into
    # every session and lose the lower(username) index (SQLAlchemy does not reflect
    # expression indexes on SQLite). So there the column comes NOT NULL with a default of
    # '', which triggers below refuse to store; PostgreSQL gets a plain NOT NULL below.
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(
            sa.Column("email_key", sa.String(length=960), nullable=not sqlite, server_default="" if sqlite else None)
        )
    # Read again: on PostgreSQL the ALTER holds the table's lock from here to the commit, so
    # these are all the rows there will be (a registration by the old version waits).
    keys = _keys_or_refuse()
    if keys:
        op.get_bind().execute(
            _USERS.update().where(_USERS.c.id == sa.bindparam("user_id")).values(email_key=sa.bindparam("key")),
            [{"user_id": user_id, "key": key} for user_id, key in keys.items()],
        )
    if sqlite:
        for create, _ in _SQLITE_TRIGGERS:
            op.execute(create)
    else:
        op.alter_column("users", "email_key", existing_type=sa.String(length=960), nullable=False)
    op.drop_index("uq_users_email_lower", table_name="users")
    op.create_index("uq_users_email_key", "users", ["email_key"], unique=True)


def downgrade() -> None:
    # Emails distinct by key are distinct by lower() too (lower() folds a subset of what
    # the key folds), so the old index always builds.
    op.drop_index("uq_users_email_key", table_name="users")
    if op.get_bind().dialect.name == "sqlite":
        for _, drop in _SQLITE_TRIGGERS:
            op.execute(drop)
        # In place (SQLite 3.35+), not batch mode's rebuild: see upgrade().
        op.execute("ALTER TABLE users DROP COLUMN email_key")
    else:
        op.drop_column("users", "email_key")
    op.create_index("uq_users_email_lower", "users", [sa.literal_column("lower(email)")], unique=True)
