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


def behind_trusted_proxies(app: ASGICall, trusted_proxies: list[str]) -> ASGICall:
    """``app`` with scope["client"] and scope["scheme"] taken from the forwarding headers
    of trusted peers; ``app`` itself when no proxy is trusted."""
    if not trusted_proxies:
        return app
    return ProxyHeadersMiddleware(app, trusted_hosts=trusted_proxies)
