"""Panels and selectors both dashboards use."""

from __future__ import annotations

from deploy.grafana.model import (
    Panel,
    Target,
    Threshold,
    or_zero,
    sel,
)

# --- shared panels -------------------------------------------------------------------------

RATE = "[$__rate_interval]"
HTTP_COUNT = "http_server_request_duration_seconds_count"
HTTP_BUCKET = "http_server_request_duration_seconds_bucket"
NOT_PROBES = 'http_route!~"/health/.*"'
FIVE_XX = 'http_response_status_code=~"5.."'
NOT_5XX = 'http_response_status_code!~"5.."'
FAILED_LOGIN = 'result!="success"'


def hashing_saturation() -> Panel:
    return Panel(
        title="Hashing pool saturation",
        description=(
            "Share of the argon2 worker threads busy (running / workers), averaged over the rate interval. "
            "Near 100 % the pool is at its ceiling (about cores / 57 ms logins per second at default "
            "parameters); with hashes also waiting, UserServiceHashingPoolSaturated fires."
        ),
        targets=(
            Target(
                f"sum by (instance) (avg_over_time(user_service_password_hash_running{sel()}{RATE}))\n"
                f"/\nsum by (instance) (user_service_password_hash_workers{sel()})",
                "{{instance}}",
            ),
        ),
        unit="percentunit",
        maximum=1,
        thresholds=(Threshold(None, "green"), Threshold(0.9, "red")),
    )


def hashing_queue() -> Panel:
    return Panel(
        title="Hashing queue depth",
        description=(
            "Hashes waiting for a worker, and how many may wait before the next one is shed with 503. "
            "A queue that keeps coming back means logins wait for each other."
        ),
        targets=(
            Target(f"sum by (instance) (user_service_password_hash_queue_depth{sel()})", "{{instance}} waiting"),
            Target(
                f"sum by (instance) (user_service_password_hash_queue_capacity{sel()})",
                "{{instance}} capacity (503 beyond)",
            ),
        ),
    )


def hashing_rejections() -> Panel:
    return Panel(
        title="Hashes shed (503)",
        description=(
            "Hashes and verifies refused because the pool and its queue were full; each is a login or "
            "registration answered 503 with Retry-After (UserServiceHashingRejections)."
        ),
        targets=(
            Target(
                or_zero(
                    f"sum by (instance, operation) (rate(user_service_password_hash_rejections_total{sel()}{RATE}))"
                ),
                "{{instance}} {{operation}}",
            ),
        ),
        unit="ops",
    )


def latency_quantile(q: float) -> Panel:
    return Panel(
        title=f"p{round(q * 100)} latency by route",
        description=(
            f"{round(q * 100)}th percentile of request duration per route template (health probes left out), "
            "interpolated within histogram buckets. Exemplar dots link to the trace of a request."
        ),
        targets=(
            Target(
                f"histogram_quantile({q}, sum by (http_route, le) (rate({HTTP_BUCKET}{sel(NOT_PROBES)}{RATE})))",
                "{{http_route}}",
                exemplar=True,
            ),
        ),
        unit="s",
        width=8,
    )
