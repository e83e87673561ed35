"""GET /metrics: Prometheus text, or OpenMetrics with exemplars when the scraper asks for it.

Not behind authentication (Prometheus scrapes it from inside the cluster) and therefore
never routed by the public ingress or nginx.
"""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from app.observability.metrics import Metrics


@get("/metrics", exclude_from_auth=True, include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[object, object, State], metrics: NamedDependency[Metrics]) -> Response[bytes]:
    exposition = metrics.expose(request.headers.get("accept", ""))
    return Response(exposition.body, media_type=exposition.content_type)
