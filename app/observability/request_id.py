"""X-Request-ID: echo a sane incoming id or make one; on every response, errors included."""

from __future__ import annotations

import re
from contextvars import ContextVar
from uuid import uuid4

from litestar.types import ASGIApp, Receive, Scope, Send

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
# Printable, no spaces, bounded: anything else could forge log lines or bloat them.
_SANE = re.compile(r"[A-Za-z0-9._:/+=\-]{1,128}")

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def request_id_of(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    request_id = state.get("request_id")
    if request_id is None:
        incoming = next((value for key, value in scope.get("headers", ()) if key == _HEADER_KEY), b"")
        text = incoming.decode("latin-1")
        request_id = text if _SANE.fullmatch(text) else uuid4().hex
        state["request_id"] = request_id
    return str(request_id)


def with_request_id(app: ASGIApp) -> ASGIApp:
    """A layer of the outer chain: the request's id, echoed or made, is bound to every log
    line of the request (through the context variable). The response header is added by
    the response-headers layer (app/web/headers.py) with the others, in one pass."""

    async def identified(scope: Scope, receive: Receive, send: Send) -> None:
        token = current_request_id.set(request_id_of(scope))
        try:
            await app(scope, receive, send)
        finally:
            current_request_id.reset(token)

    return identified
