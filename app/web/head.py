"""HEAD on every GET resource (RFC 9110 §9.3.2: the GET's status and headers, no content).

Litestar routes HEAD only to handlers declared for it, and refuses a body-returning
handler declared for both, so a GET page, probe or API read answered HEAD with 405. Link
checkers and mail scanners, uptime monitors and load balancers send HEAD to exactly these.
This layer, the last before Litestar, hands Litestar the request as a GET and drops the
content from the answer; Content-Length stays the GET's, as the RFC allows. The layers
outside it still see HEAD, so metrics, the access log and the span name say HEAD.

Safe because no GET handler changes anything (opening a mailed link spends nothing, see
app/accounts/pages.py). A HEAD on a resource without GET gets the 405 a GET would, with
its Allow header.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from litestar.types import Message, Receive, Send

from app.web.client_address import ASGICall


def answering_head_as_get(app: ASGICall) -> ASGICall:
    async def entry(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await app(scope, receive, send)
            return
        # A copy: the server's own scope keeps HEAD (uvicorn sends no content for it either).
        as_get = {**scope, "method": "GET"}

        def carry_back() -> None:
            # What Litestar adds (the route template, the user) for the layers above, which
            # read it while the answer goes out and after.
            scope.update((key, value) for key, value in as_get.items() if key != "method")

        async def without_content(message: Message) -> None:
            carry_back()
            if message["type"] == "http.response.body":
                message = {"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)}
            await send(message)

        try:
            await app(as_get, receive, without_content)
        finally:
            carry_back()

    return entry
