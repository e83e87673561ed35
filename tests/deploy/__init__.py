"""Tests of the monitoring artifacts in deploy/: Prometheus rules and config, Grafana dashboards."""
