"""the audit trail: security events per account

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

A new table only: replicas of the previous release never read it, so it can be applied
while they run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Whether replicas of the previous release keep working on this schema (app/db/migrate.py).
# A new table only.
backward_compatible = True


def upgrade() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.Column("actor_id", GUID(length=16), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_security_events_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index("ix_security_events_user_id_at", "security_events", ["user_id", "at"], unique=False)
    op.create_index("ix_security_events_at", "security_events", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_security_events_at", table_name="security_events")
    op.drop_index("ix_security_events_user_id_at", table_name="security_events")
    op.drop_table("security_events")
