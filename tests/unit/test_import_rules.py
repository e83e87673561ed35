"""The one import rule import-linter cannot state (it forbids whole external packages, not
their submodules): only the places that translate (or count) database errors may see them."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
# The repository turns a lost unique-index race into AlreadyRegistered; the web layer
# turns an unreachable database into 503 and a refused value into 422; the measured pool
# counts its own checkout timeouts (and re-raises them untouched).
ALLOWED = {"accounts/repository.py", "web/problems.py", "db/pool.py"}


def _imports_sqlalchemy_errors(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "sqlalchemy.exc":
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "sqlalchemy"
            and any(alias.name == "exc" for alias in node.names)
        ):
            return True
        if isinstance(node, ast.Import) and any(alias.name.startswith("sqlalchemy.exc") for alias in node.names):
            return True
    return False


def test_only_the_translators_import_sqlalchemy_errors() -> None:
    importers = {
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        if "migrations" not in path.parts and _imports_sqlalchemy_errors(path.read_text(encoding="utf-8"))
    }
    assert importers == ALLOWED


def test_the_check_sees_each_spelling() -> None:
    assert _imports_sqlalchemy_errors("from sqlalchemy.exc import IntegrityError")
    assert _imports_sqlalchemy_errors("from sqlalchemy import exc")
    assert _imports_sqlalchemy_errors("import sqlalchemy.exc")
    assert not _imports_sqlalchemy_errors("from sqlalchemy import select")
