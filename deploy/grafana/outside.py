"""Overview panels from series the service does not export: the outside-in probes (a
blackbox exporter, job ``user-service-probe``) and the container as Kubernetes limits it
(cAdvisor through the kubelet). They answer what the process cannot see: whether clients
reach it at all, and whether its CPU quota or memory limit is what slows or kills it.
tests/deploy/test_dashboards.py holds the series each may read and the job it must select.
"""

from __future__ import annotations

from deploy.grafana.model import Panel, Row, Target, Threshold
from deploy.grafana.panels import RATE

PROBE = 'job="user-service-probe"'
# The container as deploy/prometheus/rules/user-service-kubernetes.rules.yml selects it.
CONTAINER = 'job="kubelet", namespace="user-service", container="user-service"'


def outside_in_row() -> Row:
    return Row(
        "Seen from outside (probes through the public URL)",
        (
            Panel(
                title="Outside-in probes",
                description=(
                    "Share of the blackbox exporter's probes of each public URL that succeeded: the path clients "
                    "use (DNS, load balancer, ingress, certificate, a ready pod). At 0 for 3 minutes "
                    "UserServiceProbeFailing pages, even when the service's own metrics show nothing because no "
                    "request reaches it. No line at all: nothing probes (UserServiceProbeMissing)."
                ),
                targets=(Target(f"avg by (instance) (avg_over_time(probe_success{{{PROBE}}}{RATE}))", "{{instance}}"),),
                unit="percentunit",
                maximum=1,
                thresholds=(Threshold(None, "red"), Threshold(1, "green")),
            ),
            Panel(
                title="Days until the served certificate expires",
                description=(
                    "The earliest expiry in the certificate chain each public URL presents. "
                    "UserServiceCertificateExpiry opens a ticket under 14 days and pages under 3."
                ),
                targets=(
                    Target(
                        f"min by (instance) (probe_ssl_earliest_cert_expiry{{{PROBE}}} - time()) / 86400",
                        "{{instance}}",
                    ),
                ),
                unit="d",
                thresholds=(Threshold(None, "red"), Threshold(3, "orange"), Threshold(14, "green")),
            ),
        ),
    )


def container_panels() -> tuple[Panel, ...]:
    return (
        Panel(
            title="CPU throttling (Kubernetes)",
            description=(
                "Share of each pod's CFS periods in which it hit its CPU limit. The limit equals the hashing pool, "
                "so throttling means hashes wait for quota while the node may be idle. Over 25 % for 15 minutes "
                "UserServiceCPUThrottled opens a ticket. Empty outside Kubernetes."
            ),
            targets=(
                Target(
                    f"sum by (pod) (rate(container_cpu_cfs_throttled_periods_total{{{CONTAINER}}}{RATE}))\n/\n"
                    f"sum by (pod) (rate(container_cpu_cfs_periods_total{{{CONTAINER}}}{RATE}))",
                    "{{pod}}",
                ),
            ),
            unit="percentunit",
            maximum=1,
            width=12,
            thresholds=(Threshold(None, "green"), Threshold(0.25, "red")),
        ),
        Panel(
            title="Memory against the limit (Kubernetes)",
            description=(
                "Each pod's working set (what the OOM killer judges) over its memory limit. Over 90 % for "
                "15 minutes UserServiceMemoryNearLimit opens a ticket; at 100 % the kernel kills the container "
                "(UserServiceOOMKilled). Empty outside Kubernetes or without a limit."
            ),
            targets=(
                Target(
                    f"max by (pod) (container_memory_working_set_bytes{{{CONTAINER}}})\n/\n"
                    f"max by (pod) (container_spec_memory_limit_bytes{{{CONTAINER}}} > 0)",
                    "{{pod}}",
                ),
            ),
            unit="percentunit",
            maximum=1,
            width=12,
            thresholds=(Threshold(None, "green"), Threshold(0.9, "red")),
        ),
    )
