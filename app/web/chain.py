"""The outer HTTP chain: what every HTTP request passes through before Litestar routes it.

Outside in (each layer wraps the ones below it):

1. trusted proxies  scope["client"] and scope["scheme"] from X-Forwarded-* of trusted peers,
                    so every layer below sees the real client (app/web/client_address.py)
2. request id       X-Request-ID echoed or made, bound to every log line of the request
                    (app/observability/request_id.py)
3. telemetry        RED metrics, the access line, the span's route name; outside the limit
                    below, so refusals are counted too (app/observability/http.py)
4. response headers X-Request-ID and the security headers on every response, the 431
                    below included (app/web/headers.py)
5. header limit     431 for oversized headers before any parsing (app/web/limits.py)
6. edge shedding    503 for a login or registration while the hashing pool is full, before
                    the body is read (app/web/shedding.py)
7. HEAD as GET      Litestar gets a HEAD as a GET, the answer goes out without its content;
                    the layers above still see HEAD (app/web/head.py)

then Litestar itself, whose own middleware runs in the order create_app lists it: CORS,
per-address rate limits, bearer authentication; then routing and the exception handlers
that turn every error into problem details (app/web/problems.py).

App-level Litestar middleware only sees requests that matched a route, which is why these
layers sit outside it: 404s, 405s and 431s are measured and carry the same headers.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar.types import ASGIApp

from app.observability.http import HttpTelemetry
from app.observability.request_id import with_request_id
from app.settings import HttpSettings
from app.web.after_response import running_work_after_response
from app.web.client_address import behind_trusted_proxies
from app.web.head import answering_head_as_get
from app.web.headers import with_response_headers
from app.web.limits import limit_header_bytes

Layer = Callable[[ASGIApp], ASGIApp]


def outer_chain(
    http: HttpSettings,
    telemetry: HttpTelemetry,
    *,
    pages_path: str,
    edge_shedding: Layer,
    proxy_port: int | None = None,
) -> Layer:
    """The layers above, in order, as one function from Litestar to the HTTP entry.
    ``pages_path``: where the HTML pages live, which get a policy of their own;
    ``proxy_port``: the only port whose forwarding headers count, when set."""
    layers: list[Layer] = [
        # Outermost: work left for after the response runs outside everything that times
        # or traces the request (app/web/after_response.py).
        running_work_after_response,
        lambda app: behind_trusted_proxies(app, http.trusted_proxies, proxy_port),
        with_request_id,
        telemetry.around,
        lambda app: with_response_headers(app, hsts_seconds=http.hsts_seconds, pages_path=pages_path),
        lambda app: limit_header_bytes(app, http.max_header_bytes),
        edge_shedding,
        answering_head_as_get,
    ]

    def wrap(litestar: ASGIApp) -> ASGIApp:
        entry = litestar
        for layer in reversed(layers):
            entry = layer(entry)
        return entry

    return wrap
