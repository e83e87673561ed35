"""Locust's own figures as Prometheus metrics, scraped beside the service's.

With ``LOADTEST_METRICS_PORT`` set, the Locust process that holds the run's statistics
(the master, or the only process) serves them at ``http://<address>:<port>/metrics``
(``LOADTEST_METRICS_ADDRESS``, default 127.0.0.1; 0.0.0.0 in a container), read from
Locust's statistics at each scrape:

- ``locust_requests_total{method,name}`` and ``locust_request_failures_total``: every
  request as Locust recorded it, under the scenarios' names, so sheds
  (``... [shed]``), throttled and rate-limited answers are series of their own;
- ``locust_response_time_seconds{method,name}``: a summary (sum and count) of the
  client-side response times, queueing in the load generator included;
- ``locust_response_time_recent_seconds{method,name,quantile}``: Locust's percentiles of
  the last ~10 s (0.5, 0.95, 0.99), as its web UI shows them;
- ``locust_users``: users running now.

The "Load test" dashboard (deploy/grafana/load_test.py) puts them beside the service's
series. prometheus-client is a dependency of this project, not of Locust: in an image of
Locust without it, nothing is served and the run is otherwise the same.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests.locust_series import SERIES

PORT_VARIABLE = "LOADTEST_METRICS_PORT"
ADDRESS_VARIABLE = "LOADTEST_METRICS_ADDRESS"
QUANTILES = (0.5, 0.95, 0.99)

log = logging.getLogger("loadtests")


class LocustCollector:
    """A prometheus-client collector over a runner's statistics (read at scrape time)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def collect(self) -> Iterator[Any]:
        core = importlib.import_module("prometheus_client.core")
        runner = self.environment.runner
        if runner is None:
            return
        labels = ["method", "name"]
        requests = core.CounterMetricFamily(
            "locust_requests", "Requests Locust recorded, by request name.", labels=labels
        )
        failures = core.CounterMetricFamily(
            "locust_request_failures", "Requests Locust recorded as failures, by request name.", labels=labels
        )
        response_time = core.SummaryMetricFamily(
            "locust_response_time_seconds", "Client-side response time of recorded requests.", labels=labels
        )
        recent = core.GaugeMetricFamily(
            "locust_response_time_recent_seconds",
            "Client-side response-time percentiles over Locust's last ~10 s.",
            labels=[*labels, "quantile"],
        )
        for (name, method), entry in list(runner.stats.entries.items()):
            key = [method, name]
            requests.add_metric(key, entry.num_requests)
            failures.add_metric(key, entry.num_failures)
            response_time.add_metric(key, count_value=entry.num_requests, sum_value=entry.total_response_time / 1000)
            if entry.use_response_times_cache:
                for quantile in QUANTILES:
                    value = entry.get_current_response_time_percentile(quantile)
                    if value is not None:
                        recent.add_metric([*key, f"{quantile:g}"], value / 1000)
        yield from (requests, failures, response_time, recent)
        yield core.GaugeMetricFamily("locust_users", "Locust users running now.", value=runner.user_count)


__all__ = ["SERIES", "LocustCollector", "serve"]


def serve(environment: Environment) -> bool:
    """Serve the metrics if asked to and able; True if serving."""
    port = os.environ.get(PORT_VARIABLE)
    if not port or isinstance(environment.runner, WorkerRunner):
        return False  # not asked, or a worker: the master holds the run's statistics
    try:
        prometheus = importlib.import_module("prometheus_client")
    except ImportError:
        log.warning("%s is set but prometheus-client is not installed: no Locust metrics", PORT_VARIABLE)
        return False
    registry = prometheus.CollectorRegistry()
    registry.register(LocustCollector(environment))
    address = os.environ.get(ADDRESS_VARIABLE, "127.0.0.1")
    prometheus.start_http_server(int(port), addr=address, registry=registry)
    log.info("Locust metrics on http://%s:%s/metrics", address, port)
    return True


def _on_init(environment: Environment, **_: Any) -> None:
    serve(environment)


events.init.add_listener(_on_init)
