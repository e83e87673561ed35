"""The headers every response carries, X-Request-ID and the security headers: a layer of
the outer chain (app/web/chain.py), so errors, 404s and the 431 written below Litestar
carry them too. One pass over the response's headers adds them all."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Receive, Scope, Send

from app.observability.request_id import HEADER as REQUEST_ID_HEADER
from app.observability.request_id import request_id_of
from app.web.client_address import ASGICall

# The API serves JSON only: nothing may load, frame or execute from its responses.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# The docs (/schema): Swagger UI's script, styles and favicon come from this service alone
# (app/web/docs.py; nothing inline), the OpenAPI document and "Try it out" calls go to it,
# and its CSS embeds small SVG icons as data: URLs. Nothing else loads, and nobody frames it.
DOCS_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

# The account pages (/account/...) that links in mails open: server-rendered HTML with no
# script at all, one stylesheet of the service's own, and forms that post back to it. The
# token in their URL is never sent on (Referrer-Policy below), and nobody frames them (a
# framed "Confirm" button could be clicked through an overlay).
PAGES_POLICY = "; ".join(
    [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def with_response_headers(
    app: ASGICall, *, hsts_seconds: int, docs_path: str = "/schema", pages_path: str | None = None
) -> ASGICall:
    hsts = f"max-age={hsts_seconds}; includeSubDomains" if hsts_seconds else None

    def add_headers(message: Message, scope: Scope) -> None:
        headers = MutableScopeHeaders.from_message(message)
        headers[REQUEST_ID_HEADER] = request_id_of(scope)
        for name, value in ALWAYS.items():
            headers[name] = value
        path = scope["path"]
        if _under(path, docs_path):
            headers["Content-Security-Policy"] = DOCS_POLICY
        elif pages_path is not None and _under(path, pages_path):
            headers["Content-Security-Policy"] = PAGES_POLICY
        else:
            headers["Content-Security-Policy"] = API_POLICY
        # Responses carry account data and tokens: no shared or browser cache keeps them
        # unless the handler said otherwise (the JWKS is public and cacheable).
        if "Cache-Control" not in headers:
            headers["Cache-Control"] = "no-store"
        # HSTS only means something over HTTPS (RFC 6797 §7.2 says ignore it otherwise);
        # behind a TLS-terminating proxy the scheme comes from a trusted X-Forwarded-Proto.
        if hsts and scope.get("scheme") == "https":
            headers["Strict-Transport-Security"] = hsts

    async def secured(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_headers(message, scope)
            await send(message)

        await app(scope, receive, send_secured)

    return secured
