"""What the fuzzer is given: the service's own OpenAPI document, narrowed to the input rules
docs/api.md states, with the links that chain its operations; and how a run is judged.

The generated document describes every string as ``{"type": "string", "maxLength": ...}``,
so a fuzzer reading it alone almost never produces a registration the service accepts
(a valid email, a username of 3-32 allowed characters), and then never reaches a login, a
refresh or a logout with a real token. The narrowing adds only rules the service enforces
anyway; negative generation still breaks them on purpose. The links are what schemathesis's
stateful phase follows: register -> login (with the same credentials) -> refresh -> refresh or logout,
and register -> the admin endpoints for the new user.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

AUTH = "/api/v1/auth"
USER_BY_ID = "/api/v1/users/{user_id}"

# docs/api.md, "Validation": 3-32 of these characters after NFKC; 8-256 characters.
USERNAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$"}
EMAIL = {"type": "string", "format": "email", "maxLength": 64}
PASSWORD = {"type": "string", "minLength": 8, "maxLength": 256}

# A failure code (schemathesis's ST1xx/ST2xx/...) that says the document is incomplete
# rather than that a response broke it: a status code or media type it does not list.
UNDOCUMENTED = {"ST103": "undocumented status code", "ST105": "undocumented content type"}


def _token_body(source: str) -> dict[str, Any]:
    return {"requestBody": {"refresh_token": f"$response.body#/{source}"}}


def _link(operation_id: str, **fields: Any) -> dict[str, Any]:
    return {"operationId": operation_id, **fields}


def augmented(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with the input rules and the links (the original is untouched)."""
    doc: dict[str, Any] = copy.deepcopy(dict(document))
    schemas = doc["components"]["schemas"]
    schemas["UserCreate"]["properties"].update(username=USERNAME, email=EMAIL, password=PASSWORD)
    schemas["LoginRequest"]["properties"].update(password=PASSWORD)

    paths = doc["paths"]
    ids = {path: {method: op["operationId"] for method, op in ops.items()} for path, ops in paths.items()}
    login, refresh, logout = (ids[f"{AUTH}/{name}"]["post"] for name in ("login", "refresh", "logout"))
    by_id = {method: ids[USER_BY_ID][method] for method in ("get", "patch", "delete")}

    credentials = {"requestBody": {"username": "$request.body#/username", "password": "$request.body#/password"}}
    _add_links(paths[f"{AUTH}/register"]["post"], "201", {"LogIn": _link(login, **credentials)})
    _add_links(
        paths[f"{AUTH}/register"]["post"],
        "201",
        {
            f"{method.capitalize()}User": _link(operation_id, parameters={"user_id": "$response.body#/id"})
            for method, operation_id in by_id.items()
        },
    )
    # From a login, only on to a refresh (a logout answers 204 to anything, so the fuzzing
    # phase reaches it anyway): every login the stateful phase gets through becomes a
    # refresh with a live token. From a refresh, on to either.
    _add_links(paths[f"{AUTH}/login"]["post"], "200", {"Refresh": _link(refresh, **_token_body("refresh_token"))})
    _add_links(
        paths[f"{AUTH}/refresh"]["post"],
        "200",
        {
            "Refresh": _link(refresh, **_token_body("refresh_token")),
            "LogOut": _link(logout, **_token_body("refresh_token")),
        },
    )
    return doc


def _add_links(operation: dict[str, Any], status: str, links: dict[str, Any]) -> None:
    operation["responses"][status].setdefault("links", {}).update(links)


def hard_failures(report: Mapping[str, Any]) -> list[str]:
    """Everything in a schemathesis JSON run report that is not only a gap in the document:
    5xx, bodies or headers that break their schema, errors (timeouts, dropped connections)."""
    problems = [
        f"{failure['code']} {failure['title']} ({failure['count']}): {', '.join(failure['operations'])}"
        for failure in report["failures"]
        if failure["code"] not in UNDOCUMENTED
    ]
    problems += [f"error: {json.dumps(error)[:500]}" for error in report["errors"]]
    return problems


def documentation_gaps(report: Mapping[str, Any]) -> list[str]:
    return [
        f"{UNDOCUMENTED[failure['code']]} ({failure['count']}): {', '.join(failure['operations'])}"
        for failure in report["failures"]
        if failure["code"] in UNDOCUMENTED
    ]


def read_report(report_dir: Path) -> dict[str, Any]:
    (path,) = report_dir.glob("json-*.json")
    report: dict[str, Any] = json.loads(path.read_text())
    return report
