"""Monitoring artifacts: Prometheus rules and configuration, Grafana dashboards as code."""
