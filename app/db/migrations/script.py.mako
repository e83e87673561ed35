"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from advanced_alchemy.types import GUID, DateTimeUTC  # noqa: F401  (autogenerate renders these)
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}

# Whether replicas of the previous release keep working on this schema (expand: new tables,
# nullable or defaulted columns, new indexes) or not (contract: dropped or renamed columns,
# new NOT NULL columns they do not write). True lets a rollback run the previous release
# against this schema (app/db/migrate.py); decide it for each migration, never by default.
backward_compatible: bool = ...  # type: ignore[assignment]


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
