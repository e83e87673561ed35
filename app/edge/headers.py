"""Security headers on every response, errors and 404s included (a before-send hook runs
for all of them, unlike route middleware)."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import BeforeMessageSendHookHandler, Message, Scope

# The API serves JSON only: nothing may load, frame or execute from its responses.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI (/schema) loads its script and styles from a CDN; it still may not be framed.
DOCS_POLICY = "frame-ancestors 'none'"

ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def security_headers(*, hsts_seconds: int, docs_path: str = "/schema") -> BeforeMessageSendHookHandler:
    hsts = f"max-age={hsts_seconds}; includeSubDomains" if hsts_seconds else None

    async def add_security_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        for name, value in ALWAYS.items():
            headers[name] = value
        is_docs = scope["path"] == docs_path or scope["path"].startswith(docs_path + "/")
        headers["Content-Security-Policy"] = DOCS_POLICY if is_docs else API_POLICY
        # Responses carry account data and tokens: no shared or browser cache keeps them
        # unless the handler said otherwise (the JWKS is public and cacheable).
        if "Cache-Control" not in headers:
            headers["Cache-Control"] = "no-store"
        # HSTS only means something over HTTPS (RFC 6797 §7.2 says ignore it otherwise);
        # behind a TLS-terminating proxy the scheme comes from a trusted X-Forwarded-Proto.
        if hsts and scope.get("scheme") == "https":
            headers["Strict-Transport-Security"] = hsts

    return add_security_headers
