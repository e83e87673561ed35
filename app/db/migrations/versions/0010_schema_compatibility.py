"""which releases can read the schema: the oldest compatible code head, per schema head

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A new table only: replicas of the previous release never read it. From this release on,
every migration run records in it the oldest code head that works with the schema it
leaves (app/db/migrate.py), so that a replica of an older release can start against a
schema that is ahead of it when the revisions in between only expand it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Replicas of the previous release keep working on this schema (see app/db/migrate.py).
backward_compatible = True


def upgrade() -> None:
    op.create_table(
        "schema_compatibility",
        sa.Column("head", sa.String(length=32), nullable=False),
        sa.Column("oldest_compatible", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("head", name=op.f("pk_schema_compatibility")),
    )


def downgrade() -> None:
    op.drop_table("schema_compatibility")
