"""schemathesis hooks (loaded by the CLI through SCHEMATHESIS_HOOKS=tests.fuzz.hooks).

Hypothesis draws small, similar values, so the fuzzer's registrations collide: most
well-formed sign-ups came back 409 and the chain register -> login -> refresh -> logout
was almost never reached. Before a registration is sent, a username and an email that
follow the rules get a suffix no earlier request used (what schemathesis's own "low
valid-input rate" warning advises); malformed ones are sent exactly as generated.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import schemathesis
from schemathesis import Case, HookContext

_unique = itertools.count(1)
_SIMPLE_LOCAL_PART = re.compile(r"^[A-Za-z0-9._+-]{1,40}$")


@schemathesis.hook
def before_call(context: HookContext, case: Case[Any], kwargs: dict[str, Any]) -> None:
    if case.operation.label != "POST /api/v1/auth/register" or not isinstance(case.body, dict):
        return
    username, email = case.body.get("username"), case.body.get("email")
    suffix = f"{next(_unique):x}"
    if isinstance(username, str) and 3 <= len(username) <= 32:
        case.body["username"] = username[: 32 - len(suffix) - 1] + "." + suffix
    if isinstance(email, str) and email.count("@") == 1:
        local, domain = email.split("@")
        if _SIMPLE_LOCAL_PART.match(local):
            case.body["email"] = f"{local.rstrip('.')}.{suffix}@{domain}"
