"""The client's address behind a reverse proxy, believed only from trusted proxies.

uvicorn's ProxyHeadersMiddleware does the parsing (the rightmost X-Forwarded-For entry
that is not itself a trusted proxy is the client; X-Forwarded-Proto sets the scheme). It
runs inside the application rather than as a uvicorn option so that the behaviour is the
same under ``python -m app``, ``litestar run`` and the tests, and so that an empty setting
really means "trust nobody" (uvicorn's own default trusts 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# Loosely typed on purpose: uvicorn's middleware and Litestar name the same ASGI types
# differently, and neither accepts the other's.
ASGICall = Callable[[Any, Any, Any], Awaitable[None]]


def behind_trusted_proxies(app: ASGICall, trusted_proxies: list[str], proxy_port: int | None = None) -> ASGICall:
    """``app`` with scope["client"] and scope["scheme"] taken from the forwarding headers
    of trusted peers; ``app`` itself when no proxy is trusted.

    With ``proxy_port`` the headers count only on connections to that port (the server's
    own address, scope["server"], says which listener took the connection): a client that
    reaches the other port, where the proxy never is, is its own TCP address, even from an
    address inside a trusted range."""
    if not trusted_proxies:
        return app
    believing = ProxyHeadersMiddleware(app, trusted_hosts=trusted_proxies)
    if proxy_port is None:
        return believing

    async def on_the_proxy_port_only(scope: Any, receive: Any, send: Any) -> None:
        listener = scope.get("server")
        if listener is not None and listener[1] == proxy_port:
            await believing(scope, receive, send)
        else:
            await app(scope, receive, send)

    return on_the_proxy_port_only
