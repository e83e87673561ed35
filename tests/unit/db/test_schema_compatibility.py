"""Every migration says whether the previous release keeps working on its schema, and the
oldest release that can serve a schema follows from those declarations (app/db/migrate.py)."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from app.db.config import MIGRATIONS_DIR
from app.db.migrate import oldest_compatible_head


def script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config)


def test_every_migration_declares_its_compatibility_explicitly() -> None:
    # The template writes `backward_compatible: bool = ...`: a migration must decide.
    undecided = [
        revision.revision
        for revision in script().walk_revisions()
        if not isinstance(getattr(revision.module, "backward_compatible", None), bool)
    ]
    assert undecided == []


def test_the_oldest_release_that_serves_a_schema_stops_at_the_last_contract_step() -> None:
    found = script()
    # 0003 (the email key) is the last contract step: a schema at 0010 serves code from 0003.
    assert oldest_compatible_head(found, "0010") == "0003"
    assert oldest_compatible_head(found, "0004") == "0003"
    # A contract step serves only code that knows it.
    assert oldest_compatible_head(found, "0003") == "0003"
    assert oldest_compatible_head(found, "0002") == "0001"
    assert oldest_compatible_head(found, "0001") == "0001"
