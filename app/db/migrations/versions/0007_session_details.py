"""sessions a person can see: last use, client address, user agent, amr; known clients

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Expand only: nullable columns (amr with a server default) and a new table, so replicas
of the previous release, which never name them, keep working while it is applied.
Existing sessions get their login time as their last use.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Whether replicas of the previous release keep working on this schema (app/db/migrate.py).
# Expand only (see above).
backward_compatible = True


def upgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch:
        batch.add_column(sa.Column("last_used_at", DateTimeUTC(timezone=True), nullable=True))
        batch.add_column(sa.Column("ip", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("amr", sa.String(length=32), server_default="pwd", nullable=False))
    op.execute("UPDATE auth_sessions SET last_used_at = created_at WHERE last_used_at IS NULL")
    op.create_table(
        "known_clients",
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.Column("client_hash", sa.String(length=64), nullable=False),
        sa.Column("last_seen_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_known_clients_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "client_hash", name=op.f("pk_known_clients")),
    )
    op.create_index(op.f("ix_known_clients_last_seen_at"), "known_clients", ["last_seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_known_clients_last_seen_at"), table_name="known_clients")
    op.drop_table("known_clients")
    with op.batch_alter_table("auth_sessions") as batch:
        batch.drop_column("amr")
        batch.drop_column("user_agent")
        batch.drop_column("ip")
        batch.drop_column("last_used_at")
