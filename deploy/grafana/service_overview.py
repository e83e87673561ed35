"""The service overview: SLOs and error budgets, RED per route, saturation."""

from __future__ import annotations

from deploy.grafana.model import (
    QUANTILES,
    SLOS,
    Dashboard,
    Panel,
    Row,
    Target,
    Threshold,
    or_zero,
    sel,
)
from deploy.grafana.outside import container_panels, outside_in_row
from deploy.grafana.panels import (
    FIVE_XX,
    HTTP_BUCKET,
    HTTP_COUNT,
    NOT_PROBES,
    RATE,
    hashing_queue,
    hashing_rejections,
    hashing_saturation,
    latency_quantile,
)
from deploy.slo.spec import TIERS, WINDOWS, Slo

# --- service overview ------------------------------------------------------------------------


def bad_share_30d(slo: Slo) -> str:
    """Bad events over all events in the last 30 days, from the 5-minute recording rules
    (sum_over_time of rates weighs every 5 minutes by its traffic)."""
    job = sel(instance=False)
    bad, total = slo.rule("errors", "5m"), slo.rule("events", "5m")
    return f"(\n  sum_over_time({bad}{job}[30d])\n  /\n  sum_over_time({total}{job}[30d])\n)"


def budget_remaining(slo: Slo) -> Panel:
    return Panel(
        title=f"{slo.name} error budget remaining (30 d)",
        description=(
            f"SLO: {slo.description} 100 % = no budget spent, 0 % = SLO missed. Computed from recording rules over "
            "the last 30 days (or over the Prometheus retention, if shorter). docs/runbook.md explains the SLOs."
        ),
        targets=(Target(f"1 - {bad_share_30d(slo)} / {slo.budget:g}", "remaining"),),
        kind="stat",
        unit="percentunit",
        width=6,
        height=5,
        minimum=None,
        decimals=1,
        thresholds=(Threshold(None, "red"), Threshold(0, "orange"), Threshold(0.25, "green")),
    )


def compliance(slo: Slo) -> Panel:
    return Panel(
        title=f"{slo.name} SLI (30 d)",
        description=f"Share of good events over the last 30 days. SLO: {slo.description}",
        targets=(Target(f"1 - {bad_share_30d(slo)}", "SLI"),),
        kind="stat",
        unit="percentunit",
        width=6,
        height=5,
        minimum=None,
        decimals=3,
        thresholds=(Threshold(None, "red"), Threshold(slo.objective / 100, "green")),
    )


def burn_rate(slo: Slo) -> Panel:
    job = sel(instance=False)
    # Every window a tier reads (long and short), so each alert's two conditions show.
    windows = WINDOWS
    tiers = ", ".join(f"{t.burn_label}x ({t.long_window} and {t.short_window}, {t.severity_kind})" for t in TIERS)
    return Panel(
        title=f"{slo.name} burn rate",
        description=(
            f"Bad-event ratio divided by the {slo.budget:.2%} budget: 1x spends the 30-day budget in exactly "
            f"30 days. Alerts ({slo.alert_name}): {tiers}."
        ),
        targets=tuple(Target(f"{slo.rule('ratio', w)}{job} / {slo.budget:g}", f"{w} window") for w in windows),
        unit="x",
        thresholds=(
            Threshold(None, "green"),
            # One colour per tier, slowest first.
            *(
                Threshold(t.burn, c)
                for t, c in zip(reversed(TIERS), ("yellow", "orange", "orange", "red"), strict=True)
            ),
        ),
    )


def service_overview() -> Dashboard:
    slo = Row(
        "Service level objectives",
        (
            *(panel for objective in SLOS.slos for panel in (budget_remaining(objective), compliance(objective))),
            *(burn_rate(objective) for objective in SLOS.slos),
        ),
    )
    traffic = Row(
        "Traffic, errors and latency by route",
        (
            Panel(
                title="Request rate by route",
                description="Requests per second by route template and method (health probes left out).",
                targets=(
                    Target(
                        f"sum by (http_route, http_request_method) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))",
                        "{{http_request_method}} {{http_route}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                title="5xx ratio by route",
                description=(
                    "Share of each route's answers that were 5xx (503 sheds included). Routes without any 5xx show 0."
                ),
                targets=(
                    Target(
                        "(\n"
                        f"  sum by (http_route) (rate({HTTP_COUNT}{sel(NOT_PROBES, FIVE_XX)}{RATE}))\n  or\n"
                        f"  0 * sum by (http_route) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))\n)\n/\n"
                        f"sum by (http_route) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))",
                        "{{http_route}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                title="5xx answers by route and error type",
                description=(
                    "5xx answers per second; error_type is the status code or, for an exception no handler "
                    "answered, its class if known and _OTHER otherwise (the access line's exception field names it)."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (http_route, error_type) (rate(http_server_errors_total{sel()}{RATE}))"),
                        "{{http_route}} {{error_type}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            *(latency_quantile(q) for q in QUANTILES),
            Panel(
                title="Answers by status code",
                description="All answers per second by status code, probes included.",
                targets=(
                    Target(
                        f"sum by (http_response_status_code) (rate({HTTP_COUNT}{sel()}{RATE}))",
                        "{{http_response_status_code}}",
                    ),
                ),
                unit="reqps",
                width=8,
                stacked=True,
            ),
            Panel(
                title="Requests in flight",
                description="Requests being served right now, by method (probes included).",
                targets=(
                    Target(
                        f"sum by (http_request_method) (http_server_active_requests{sel()})", "{{http_request_method}}"
                    ),
                ),
                width=8,
            ),
            Panel(
                title="Readiness",
                description=(
                    "1 while the instance answered a GET /health/ready probe with anything but 200 in the last "
                    "2 minutes (recording rule over the probe answers). Repeated flips fire "
                    "UserServiceReadinessFlapping."
                ),
                targets=(
                    Target(f"max by (instance) (instance:user_service_readiness_failing:bool{sel()})", "{{instance}}"),
                ),
                width=8,
                maximum=1,
            ),
        ),
    )
    by_instance = Row(
        "By instance (find the bad pod)",
        (
            Panel(
                title="Request rate by instance",
                description="API requests per second each instance served (health probes left out).",
                targets=(Target(f"sum by (instance) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))", "{{instance}}"),),
                unit="reqps",
                width=8,
            ),
            Panel(
                title="5xx ratio by instance",
                description=(
                    "Share of each instance's answers that were 5xx (probes left out): one instance far above "
                    "the others is the pod to look at (or delete)."
                ),
                targets=(
                    Target(
                        "(\n"
                        f"  sum by (instance) (rate({HTTP_COUNT}{sel(NOT_PROBES, FIVE_XX)}{RATE}))\n  or\n"
                        f"  0 * sum by (instance) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))\n)\n/\n"
                        f"sum by (instance) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))",
                        "{{instance}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                title="p99 latency by instance",
                description=(
                    "99th percentile of request duration per instance, every route together (probes left out). "
                    "Exemplar dots link to a slow request's trace."
                ),
                targets=(
                    Target(
                        f"histogram_quantile(0.99, sum by (instance, le) (rate({HTTP_BUCKET}{sel(NOT_PROBES)}{RATE})))",
                        "{{instance}}",
                        exemplar=True,
                    ),
                ),
                unit="s",
                width=8,
            ),
        ),
    )
    process = Row(
        "Process (utilisation, saturation, errors)",
        (
            Panel(
                title="CPU",
                description=(
                    "Cores each process used (user + system). At the hashing pool's size (the container's CPU "
                    "limit in Kubernetes) the pod is saturated; UserServiceCPUThrottled says when the limit bit."
                ),
                targets=(Target(f"sum by (instance) (rate(process_cpu_seconds_total{sel()}{RATE}))", "{{instance}}"),),
                width=8,
            ),
            Panel(
                title="Memory",
                description=(
                    "Resident memory of each process. Each running hash adds its memory cost (46 MiB at the "
                    "defaults) while it runs; UserServiceMemoryNearLimit compares it with the container's limit."
                ),
                targets=(Target(f"max by (instance) (process_resident_memory_bytes{sel()})", "{{instance}}"),),
                unit="bytes",
                width=8,
            ),
            Panel(
                title="Event-loop lag (p99)",
                description=(
                    "How late the event loop woke a timer that sleeps 0.5 s (user_service_event_loop_lag_seconds): "
                    "the wait every request on the process shared. Above a few milliseconds the loop is blocked "
                    "or starved of CPU."
                ),
                targets=(
                    Target(
                        "histogram_quantile(0.99, sum by (instance, le) "
                        f"(rate(user_service_event_loop_lag_seconds_bucket{sel()}{RATE})))",
                        "{{instance}}",
                    ),
                ),
                unit="s",
                width=8,
            ),
            Panel(
                title="Open file descriptors",
                description=(
                    "Sockets and files each process holds, against its limit: client connections, database "
                    "connections, log files. Near the limit, new connections fail."
                ),
                targets=(
                    Target(
                        f"max by (instance) (process_open_fds{sel()}) / max by (instance) (process_max_fds{sel()})",
                        "{{instance}}",
                    ),
                ),
                unit="percentunit",
                width=8,
                maximum=1,
            ),
            Panel(
                title="Garbage collections",
                description="Python's collections per second by generation: a rise in generation 2 is long pauses.",
                targets=(
                    Target(
                        f"sum by (instance, generation) (rate(python_gc_collections_total{sel()}{RATE}))",
                        "{{instance}} gen {{generation}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
            Panel(
                title="Restarts (last hour)",
                description=(
                    "Times each instance's process started in the last hour (a crash, an OOM kill, a deploy). "
                    "UserServiceCrashLooping and UserServiceOOMKilled name the cause in Kubernetes."
                ),
                targets=(
                    Target(f"max by (instance) (changes(process_start_time_seconds{sel()}[1h]))", "{{instance}}"),
                ),
                width=8,
            ),
            *container_panels(),
        ),
    )
    saturation = Row(
        "Saturation",
        (
            hashing_saturation(),
            hashing_queue(),
            hashing_rejections(),
            Panel(
                title="Database connection pool",
                description=(
                    "Connections checked out, idle, and the pool's maximum (size + overflow), sampled every 2 s. "
                    "How long checkouts wait is the panel below."
                ),
                targets=(
                    Target(
                        f"sum by (instance) (user_service_db_pool_connections_in_use{sel()})", "{{instance}} in use"
                    ),
                    Target(f"sum by (instance) (user_service_db_pool_connections_idle{sel()})", "{{instance}} idle"),
                    Target(f"sum by (instance) (user_service_db_pool_connections_max{sel()})", "{{instance}} max"),
                ),
            ),
            Panel(
                title="Database connection wait",
                description=(
                    "How long a checkout waited for a pool connection (p99 per instance; a warm pool answers in "
                    "microseconds, over 50 ms means it waited for another request's connection), and checkouts "
                    "that gave up at the pool timeout (each one a 503). Timeouts, or more than 10 % of checkouts "
                    "over 50 ms, for 5 minutes fire UserServiceDBPoolExhausted."
                ),
                targets=(
                    Target(
                        "histogram_quantile(0.99, sum by (instance, le) "
                        f"(rate(db_client_connection_wait_time_seconds_bucket{sel()}{RATE})))",
                        "{{instance}} p99 wait",
                    ),
                    Target(
                        or_zero(f"sum by (instance) (rate(db_client_connection_timeouts_total{sel()}{RATE}))"),
                        "{{instance}} timeouts/s",
                    ),
                ),
                unit="s",
                width=24,
                thresholds=(Threshold(None, "green"), Threshold(0.05, "orange")),
            ),
        ),
    )
    mail = Row(
        "Mail outbox",
        (
            Panel(
                title="Oldest waiting mail",
                description=(
                    "Age of the oldest mail in the outbox that is neither sent nor given up, sampled by each "
                    "delivering process (max across them: each sees the whole outbox). Above 10 minutes for "
                    "5, UserServiceMailOutboxStuck fires."
                ),
                targets=(Target(f"max(user_service_mail_outbox_oldest_unsent_age_seconds{sel()})", "oldest"),),
                unit="s",
                width=8,
                thresholds=(Threshold(None, "green"), Threshold(600, "red")),
            ),
            Panel(
                title="Mails waiting",
                description="Mails in the outbox waiting to be sent (max across the delivering processes).",
                targets=(Target(f"max(user_service_mail_outbox_depth{sel()})", "waiting"),),
                width=8,
            ),
            Panel(
                title="Deliveries by result",
                description=(
                    "Delivery attempts per second: sent, failed (retried later with back-off; see the "
                    "mail_delivery_failed events) and gave_up (never sent; the reason is in the row's "
                    "last_error). Retries: attempts of mails that had failed before."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_mail_deliveries_total{sel()}{RATE}))"),
                        "{{result}}",
                    ),
                    Target(or_zero(f"sum(rate(user_service_mail_delivery_retries_total{sel()}{RATE}))"), "retries"),
                ),
                unit="ops",
                width=8,
            ),
        ),
    )
    build = Row(
        "Build",
        (
            Panel(
                title="Running builds",
                description="Instances per version and commit (user_service_build_info); two lines = a rollout.",
                targets=(
                    Target(f"count by (version, commit) (user_service_build_info{sel()})", "{{version}} {{commit}}"),
                ),
                width=24,
                height=6,
            ),
        ),
    )
    return Dashboard(
        uid="user-service-overview",
        title="User service / Overview",
        description="RED per route, SLOs and error budgets, hashing-pool and database-pool saturation, mail outbox.",
        filename="service-overview.json",
        rows=(slo, outside_in_row(), traffic, by_instance, saturation, process, mail, build),
    )
