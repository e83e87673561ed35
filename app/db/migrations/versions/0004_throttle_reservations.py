"""password checks in flight per throttled name (the reservation before the hash)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Whether replicas of the previous release keep working on this schema (app/db/migrate.py).
# New columns with defaults or nullable: the previous release never names them.
backward_compatible = True


def upgrade() -> None:
    # Additive with server defaults: replicas of the previous release keep working on it.
    with op.batch_alter_table("login_throttle") as batch_op:
        batch_op.add_column(sa.Column("in_flight", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("lease_until", DateTimeUTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("grant_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_throttle") as batch_op:
        batch_op.drop_column("grant_token")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("in_flight")
