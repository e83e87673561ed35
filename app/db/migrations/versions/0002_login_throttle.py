"""failed-login counters of the per-account login throttle

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Whether replicas of the previous release keep working on this schema (app/db/migrate.py).
# A new table only.
backward_compatible = True


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("blocked_until", DateTimeUTC(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
    )
    with op.batch_alter_table("login_throttle") as batch_op:
        # The periodic clean-up deletes by age.
        batch_op.create_index("ix_login_throttle_last_failure_at", ["last_failure_at"], unique=False)


def downgrade() -> None:
    op.drop_table("login_throttle")
