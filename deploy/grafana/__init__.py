"""Grafana dashboards as code (generate.py renders dashboards/*.json)."""
