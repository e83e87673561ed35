"""The load-test dashboard: what Locust offered and saw, beside what the service served.

Locust's series come from loadtests/locust_metrics.py (``LOADTEST_METRICS_PORT``); the
service's are its own. Read with the run's window (loadtests/run_windows.py: the
``run-window.json`` of each report, or the Grafana annotations tagged ``loadtest``).
"""

from __future__ import annotations

from deploy.grafana.model import Dashboard, Panel, Row, Target, or_zero, sel
from deploy.grafana.panels import HTTP_COUNT, NOT_PROBES, RATE, hashing_queue, hashing_saturation, latency_quantile

LOCUST_RATE = "[$__rate_interval]"
SHED = 'name=~".*\\\\[shed\\\\]"'
REFUSED_BY_LIMITS = 'name=~".*\\\\[(throttled|rate-limited)\\\\]"'


def load_test() -> Dashboard:
    offered = Row(
        "Offered and served",
        (
            Panel(
                title="Offered load, by outcome (Locust)",
                description=(
                    "Requests per second as Locust recorded them: all, shed by the service (503 + Retry-After, "
                    "recorded as '<name> [shed]'), refused by the login throttle or the per-address limits, and "
                    "failures (anything a scenario did not expect). Client-side: what the load generator sent."
                ),
                targets=(
                    Target(f"sum(rate(locust_requests_total{LOCUST_RATE}))", "offered"),
                    Target(or_zero(f"sum(rate(locust_requests_total{{{SHED}}}{LOCUST_RATE}))"), "shed"),
                    Target(
                        or_zero(f"sum(rate(locust_requests_total{{{REFUSED_BY_LIMITS}}}{LOCUST_RATE}))"),
                        "throttled or rate-limited",
                    ),
                    Target(f"sum(rate(locust_request_failures_total{LOCUST_RATE}))", "failures"),
                ),
                unit="reqps",
            ),
            Panel(
                title="Served, by status (service)",
                description=(
                    "Requests per second the service answered, by status code (health probes left out): the "
                    "server's side of the panel on the left. 503 here and 'shed' there should match."
                ),
                targets=(
                    Target(
                        f"sum by (http_response_status_code) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))",
                        "{{http_response_status_code}}",
                    ),
                ),
                unit="reqps",
                stacked=True,
            ),
            Panel(
                title="Locust users",
                description="Simulated users running: the offered concurrency (closed loop).",
                targets=(Target("sum(locust_users)", "users"),),
                width=8,
            ),
        ),
    )
    capacity = Row("The hashing pool under this load", (hashing_saturation(), hashing_queue()))
    latency = Row(
        "Latency from both sides",
        (
            Panel(
                title="p95 as Locust saw it, by request name",
                description=(
                    "Locust's 95th percentile over its last ~10 s. Includes the network and any wait inside the "
                    "load generator: far above the service's p95 means the generator is the bottleneck."
                ),
                targets=(Target('locust_response_time_recent_seconds{quantile="0.95"}', "{{method}} {{name}}"),),
                unit="s",
                width=16,
            ),
            latency_quantile(0.95),
            Panel(
                title="Mean response time: Locust against the service",
                description=(
                    "Mean over the rate interval on each side. The gap is time outside the service's handler: "
                    "the network, the accept queue and the load generator itself."
                ),
                targets=(
                    Target(
                        f"sum(rate(locust_response_time_seconds_sum{LOCUST_RATE}))\n"
                        f"/\nsum(rate(locust_response_time_seconds_count{LOCUST_RATE}))",
                        "Locust",
                    ),
                    Target(
                        f"sum(rate(http_server_request_duration_seconds_sum{sel(NOT_PROBES)}{RATE}))\n"
                        f"/\nsum(rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))",
                        "service",
                    ),
                ),
                unit="s",
                width=24,
            ),
        ),
    )
    return Dashboard(
        uid="user-service-load-test",
        title="User service / Load test",
        description=(
            "A Locust run beside the service: offered load and its outcomes, what the service served, the "
            "hashing pool, and latency from both sides."
        ),
        filename="load-test.json",
        rows=(offered, capacity, latency),
    )
