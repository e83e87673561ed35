"""Limits on the work one request can cause, beyond the body size (Litestar's
``request_max_body_size``) and the hashing queue (app/identity/passwords.py):

- header bytes: uvicorn's httptools parser accepts headers of any size (a 10 MB header
  was answered 200 in a test); requests over ``USER_SERVICE_HTTP__MAX_HEADER_BYTES`` get
  431 before any other work. The bytes were already read by then: the reverse proxy in
  front (nginx's large_client_header_buffers, the ingress) is what bounds memory.
- JSON nesting: a 64 KiB body can nest 30,000 levels deep, which made msgspec's generic
  decoder raise RecursionError (a 500). Bodies are at most ``MAX_JSON_DEPTH`` deep (the
  service's own schemas are 1 level), else 400; app/web/bodies.py applies it.
"""

from __future__ import annotations

from typing import Any

from litestar.types import Receive, Scope, Send

from app.web.client_address import ASGICall
from app.web.problems import problem_bytes, send_problem

MAX_JSON_DEPTH = 16


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def limit_header_bytes(app: ASGICall, max_bytes: int) -> ASGICall:
    """``app`` behind a 431 for requests whose header names and values exceed ``max_bytes``.

    The answer is a problem document like every other; the layers outside this one add
    X-Request-ID and the security headers to it."""
    body = problem_bytes(
        status=431,
        kind="headers-too-large",
        title="Request header fields too large",
        detail=f"The request's headers exceed {max_bytes} bytes.",
    )

    async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
        if sum(len(name) + len(value) for name, value in scope["headers"]) <= max_bytes:
            await app(scope, receive, send)
            return
        await send_problem(send, 431, body)

    return bounded
