"""X-Request-ID: echo a sane incoming id or make one; on every response, errors included."""

from __future__ import annotations

import re
from contextvars import ContextVar
from uuid import uuid4

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

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
    """A layer of the outer chain: the id is known to every log line of the request (through
    the context variable) and sent back on every response, errors and 431s included."""

    async def identified(scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        token = current_request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message)[HEADER] = request_id
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)

    return identified
