"""The series Locust's metrics (loadtests/locust_metrics.py) expose: a module of its own,
without a Locust import, so that the test suite's process can read it (importing Locust
patches the standard library with gevent)."""

from __future__ import annotations

# Every series name the collector exposes (a test holds it to that; the dashboards may read
# only these and the service's own).
SERIES = frozenset(
    {
        "locust_requests_total",
        "locust_request_failures_total",
        "locust_response_time_seconds_sum",
        "locust_response_time_seconds_count",
        "locust_response_time_recent_seconds",
        "locust_users",
    }
)
