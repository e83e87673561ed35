"""How a response is counted: expected, shed, or a real failure.

Every request goes through ``catch_response=True`` and one of these verdicts:

- the status the scenario expects (a 200, or the 401 of a deliberate wrong password):
  a success under the request's own name;
- 503 with ``Retry-After`` and problem type ``hashing-capacity-exceeded``: the service
  shedding load as designed. A success, renamed ``<name> [shed]`` so the shed-ratio gate
  (and anyone reading the report) sees it apart from both successes and errors;
- anything else (other statuses, other 503s such as ``dependency-unavailable``, a
  connection error, a body without the fields the contract promises): a failure, with a
  short, low-cardinality message so Locust's failure table groups them usefully.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Collection
from typing import Any

from locust.contrib.fasthttp import ResponseContextManager

from loadtests.scenarios.names import SHED_PROBLEM, shed

MAX_BACKOFF_SECONDS = 5.0


class Verdict(enum.Enum):
    OK = "ok"
    SHED = "shed"
    FAILED = "failed"


def problem_type(response: ResponseContextManager) -> str:
    """The last segment of a problem-details ``type``, or "" when the body is not one."""
    with contextlib.suppress(Exception):
        body: Any = response.json()
        if isinstance(body, dict) and isinstance(body.get("type"), str):
            return str(body["type"]).rsplit("/", 1)[-1]
    return ""


def retry_after(response: ResponseContextManager) -> float | None:
    value = response.headers.get("Retry-After") if response.headers else None
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def settle(response: ResponseContextManager, expected: Collection[int]) -> Verdict:
    """Mark ``response`` (inside its ``with`` block) and say how it was counted."""
    status = response.status_code
    if status in expected:
        response.success()
        return Verdict.OK
    if status == 503 and retry_after(response) is not None and problem_type(response) == SHED_PROBLEM:
        response.request_meta["name"] = shed(response.request_meta["name"])
        response.success()
        return Verdict.SHED
    if not status:
        response.failure(f"connection error: {type(getattr(response, 'error', None)).__name__}")
    else:
        response.failure(f"unexpected {status} {problem_type(response) or '(no problem type)'}")
    return Verdict.FAILED


def require_fields(response: ResponseContextManager, *fields: str) -> dict[str, Any] | None:
    """The JSON body if it has ``fields``; otherwise the response becomes a failure."""
    try:
        body: Any = response.json()
    except (ValueError, TypeError):  # not JSON, or no body at all
        body = None
    if not isinstance(body, dict) or any(f not in body for f in fields):
        response.failure(f"body lacks {', '.join(fields)}")
        return None
    return body


def back_off(response: ResponseContextManager) -> None:
    """What a polite client does after a shed: wait as long as Retry-After says (capped)."""
    time.sleep(min(retry_after(response) or 1.0, MAX_BACKOFF_SECONDS))
