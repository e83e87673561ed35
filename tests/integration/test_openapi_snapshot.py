"""The OpenAPI document is the published contract: any change to it, deliberate or not,
shows up here as a diff against the committed snapshot, byte for byte as GET
/schema/openapi.json serves it.

After a deliberate change, refresh the snapshot and commit it with the change:

    UPDATE_OPENAPI_SNAPSHOT=1 uv run pytest tests/integration/test_openapi_snapshot.py

That run rewrites tests/data/openapi.json and then fails, so that a run with the variable
set can never pass; review ``git diff tests/data/openapi.json`` and run again without it.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from tests.integration.helpers import Client

SNAPSHOT = Path(__file__).resolve().parent.parent / "data" / "openapi.json"
UPDATE_VARIABLE = "UPDATE_OPENAPI_SNAPSHOT"
REFRESH = f"{UPDATE_VARIABLE}=1 uv run pytest tests/integration/test_openapi_snapshot.py"


def readable_diff(expected: bytes, served: bytes, limit: int = 80) -> str:
    """The served document against the snapshot, both pretty-printed (the bytes are one
    line), cut to ``limit`` lines."""

    def lines(raw: bytes) -> list[str]:
        try:
            return json.dumps(json.loads(raw), indent=2).splitlines()
        except ValueError:
            return raw.decode(errors="replace").splitlines()

    diff = list(difflib.unified_diff(lines(expected), lines(served), "snapshot", "served", lineterm=""))
    if not diff:
        return "(the same JSON, encoded differently: spacing or escaping)"
    shown = "\n".join(diff[:limit])
    return shown if len(diff) <= limit else f"{shown}\n... {len(diff) - limit} more diff lines"


async def test_openapi_document_matches_the_committed_snapshot(client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    served = response.content

    if os.environ.get(UPDATE_VARIABLE) == "1":
        SNAPSHOT.write_bytes(served)
        pytest.fail(
            f"{UPDATE_VARIABLE}=1: wrote {SNAPSHOT} ({len(served)} bytes); review "
            "`git diff tests/data/openapi.json`, commit it, and run again without the variable"
        )

    assert SNAPSHOT.is_file(), f"no snapshot at {SNAPSHOT}: create it with `{REFRESH}`"
    expected = SNAPSHOT.read_bytes()
    unchanged = served == expected  # not in the assert: pytest would print both whole documents
    assert unchanged, (
        f"GET /schema/openapi.json differs from {SNAPSHOT}. If the change to the API contract is "
        f"deliberate, refresh the snapshot with `{REFRESH}` and commit it.\n"
        f"{readable_diff(expected, served)}"
    )
