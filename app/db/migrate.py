"""Schema state at start-up: apply migrations (embedded default) or check they were applied,
and whether a schema ahead of this release is one it can still serve.

A rollback runs the previous release against the schema the new one migrated. Each
migration says whether replicas of the release before it keep working on its schema
(``backward_compatible`` in its module: expand, or contract). Every migration run records
in ``schema_compatibility``, for the head it leaves, the oldest code head that still works
with it: walking down from the head while each revision is backward-compatible. A replica
whose code does not know the database's head (it is ahead) reads that record and serves
when its own head is that one or newer; otherwise it refuses and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import delete, insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.config import MIGRATIONS_DIR
from app.db.models import SchemaCompatibility


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def is_backward_compatible(script: ScriptDirectory, revision: str) -> bool:
    """The migration's own declaration; a migration that does not declare it is not."""
    found = script.get_revision(revision)
    return found is not None and getattr(found.module, "backward_compatible", False) is True


def oldest_compatible_head(script: ScriptDirectory, head: str) -> str:
    """The oldest code head that works with the schema at ``head``: every revision above
    it, up to ``head``, only expands the schema."""
    oldest = head
    while is_backward_compatible(script, oldest):
        below = script.get_revision(oldest)
        if below is None or not isinstance(below.down_revision, str):
            break  # the base, or a merge point: stop where the chain is no longer single
        oldest = below.down_revision
    return oldest


def record_compatibility(connection: Connection, script: ScriptDirectory) -> None:
    """Called by env.py in the migration's transaction, after every upgrade or downgrade:
    the schema's head and the oldest code head that can serve it. Nothing before the
    revision that creates the table (0010), nor on a branched history."""
    if not inspect(connection).has_table(SchemaCompatibility.__tablename__):
        return
    heads = MigrationContext.configure(connection).get_current_heads()
    connection.execute(delete(SchemaCompatibility))
    if len(heads) == 1:
        oldest = oldest_compatible_head(script, heads[0])
        connection.execute(insert(SchemaCompatibility).values(head=heads[0], oldest_compatible=oldest))


class SchemaFit(Enum):
    CURRENT = "current"  # at this release's head
    BEHIND = "behind"  # migrations of this release not applied yet: wait for the job
    AHEAD_COMPATIBLE = "ahead_compatible"  # a newer release's expand-only schema: serve
    AHEAD_INCOMPATIBLE = "ahead_incompatible"  # a newer release contracted it: refuse


@dataclass(frozen=True, slots=True)
class SchemaState:
    fit: SchemaFit
    database_heads: tuple[str, ...]
    code_heads: tuple[str, ...]
    oldest_compatible: str | None = None

    @property
    def serves(self) -> bool:
        return self.fit in (SchemaFit.CURRENT, SchemaFit.AHEAD_COMPATIBLE)

    @property
    def problem(self) -> str | None:
        """Why this replica does not serve, for the startup probe and the log."""
        database, code = ", ".join(self.database_heads) or "empty", ", ".join(self.code_heads)
        if self.fit is SchemaFit.BEHIND:
            missing = sorted(set(self.code_heads) - set(self.database_heads))
            return f"schema not migrated (run `litestar schema migrate`; missing {missing})"
        if self.fit is SchemaFit.AHEAD_INCOMPATIBLE:
            needs = (
                f"it needs code at revision {self.oldest_compatible} or newer"
                if self.oldest_compatible
                else "it records no compatible release (a schema from before revision 0010, or a branched history)"
            )
            return (
                f"the database's schema ({database}) is ahead of this release ({code}) and not compatible with it: "
                f"{needs}. Roll forward, or downgrade the schema to {code} first (docs/deploy-kubernetes.md, "
                f"'Rolling back')"
            )
        return None


def _state(connection: Connection) -> SchemaState:
    script = _script()
    code_heads = tuple(script.get_heads())
    database_heads = tuple(MigrationContext.configure(connection).get_current_heads())
    if set(database_heads) == set(code_heads):
        return SchemaState(SchemaFit.CURRENT, database_heads, code_heads)
    if all(_known(script, head) for head in database_heads):
        return SchemaState(SchemaFit.BEHIND, database_heads, code_heads)
    oldest = None
    if len(database_heads) == 1 and inspect(connection).has_table(SchemaCompatibility.__tablename__):
        oldest = connection.execute(
            select(SchemaCompatibility.oldest_compatible).where(SchemaCompatibility.head == database_heads[0])
        ).scalar_one_or_none()
    # The code serves when the oldest compatible head is its own or one of its ancestors.
    if oldest is not None and len(code_heads) == 1 and _known(script, oldest):
        ancestry = {revision.revision for revision in script.iterate_revisions(code_heads[0], "base")}
        if oldest in ancestry:
            return SchemaState(SchemaFit.AHEAD_COMPATIBLE, database_heads, code_heads, oldest)
    return SchemaState(SchemaFit.AHEAD_INCOMPATIBLE, database_heads, code_heads, oldest)


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:  # "Can't locate revision": one this release has no file for
        return False


async def schema_state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as connection:
        return await connection.run_sync(_state)


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def upgrade_to_head(engine: AsyncEngine) -> SchemaState:
    """The migrations ``litestar schema migrate`` runs, on the service's own engine,
    unless the schema is ahead of this release (a newer release migrated it): then it is
    left as it is, and the state says whether this release can serve it."""
    state = await schema_state(engine)
    if state.fit is SchemaFit.BEHIND:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
        state = await schema_state(engine)
    return state
