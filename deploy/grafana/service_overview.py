"""The service overview: SLOs and error budgets, RED per route, saturation."""

from __future__ import annotations

from deploy.grafana.model import (
    AVAILABILITY_BUDGET,
    LOGIN_LATENCY_BUDGET,
    LOGIN_THRESHOLD_SECONDS,
    QUANTILES,
    Dashboard,
    Panel,
    Row,
    Target,
    Threshold,
    or_zero,
    sel,
)
from deploy.grafana.panels import (
    FIVE_XX,
    HTTP_COUNT,
    NOT_PROBES,
    RATE,
    hashing_queue,
    hashing_rejections,
    hashing_saturation,
    latency_quantile,
)

# --- service overview ------------------------------------------------------------------------


def budget_remaining(title: str, bad: str, total: str, budget: float, description: str) -> Panel:
    job = sel(instance=False)
    return Panel(
        title=title,
        description=description,
        targets=(
            Target(
                f"1 - (\n  sum_over_time({bad}{job}[30d])\n  /\n  sum_over_time({total}{job}[30d])\n) / {budget}",
                "remaining",
            ),
        ),
        kind="stat",
        unit="percentunit",
        width=8,
        height=5,
        minimum=None,
        decimals=1,
        thresholds=(Threshold(None, "red"), Threshold(0, "orange"), Threshold(0.25, "green")),
    )


def burn_rate(title: str, ratio: str, budget: float, description: str) -> Panel:
    job = sel(instance=False)
    return Panel(
        title=title,
        description=description,
        targets=tuple(
            Target(f"{ratio}{window}{job} / {budget}", f"{window} window") for window in ("5m", "1h", "6h", "3d")
        ),
        unit="x",
        thresholds=(Threshold(None, "green"), Threshold(1, "yellow"), Threshold(6, "orange"), Threshold(14.4, "red")),
    )


def service_overview() -> Dashboard:
    slo = Row(
        "Service level objectives",
        (
            budget_remaining(
                "Availability error budget remaining (30 d)",
                "job:user_service_api_errors:rate5m",
                "job:user_service_api_requests:rate5m",
                AVAILABILITY_BUDGET,
                "SLO: 99.9 % of API requests (/api/...) answered without a 5xx over 30 days; 503 sheds count as "
                "failures. 100 % = no budget spent, 0 % = SLO missed. Computed from recording rules over the "
                "last 30 days (or over the Prometheus retention, if shorter).",
            ),
            budget_remaining(
                "Login latency error budget remaining (30 d)",
                "job:user_service_login_slow:rate5m",
                "job:user_service_login_requests:rate5m",
                LOGIN_LATENCY_BUDGET,
                f"SLO: 99 % of POST /api/v1/auth/login answers (5xx left out) faster than "
                f"{LOGIN_THRESHOLD_SECONDS} s over 30 days. docs/runbook.md explains the threshold.",
            ),
            Panel(
                title="Availability (30 d)",
                description="Share of API requests answered without a 5xx over the last 30 days; the SLO is 99.9 %.",
                targets=(
                    Target(
                        f"1 - (\n  sum_over_time(job:user_service_api_errors:rate5m{sel(instance=False)}[30d])\n  /\n"
                        f"  sum_over_time(job:user_service_api_requests:rate5m{sel(instance=False)}[30d])\n)",
                        "availability",
                    ),
                ),
                kind="stat",
                unit="percentunit",
                width=8,
                height=5,
                minimum=None,
                decimals=3,
                thresholds=(Threshold(None, "red"), Threshold(0.999, "green")),
            ),
            burn_rate(
                "Availability burn rate",
                "job:user_service_availability_errors:ratio_rate",
                AVAILABILITY_BUDGET,
                "5xx ratio of API requests divided by the 0.1 % budget: 1x spends the 30-day budget in exactly "
                "30 days. Pages at 14.4x (1h and 5m) and 6x (6h and 30m), tickets at 3x and 1x.",
            ),
            burn_rate(
                "Login latency burn rate",
                "job:user_service_login_slow:ratio_rate",
                LOGIN_LATENCY_BUDGET,
                f"Share of logins slower than {LOGIN_THRESHOLD_SECONDS} s divided by the 1 % budget. Same tiers as "
                "availability.",
            ),
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
                    "5xx answers per second; error_type is the status code or, when the handler raised, the "
                    "exception class (look for the request's error log line)."
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
    saturation = Row(
        "Saturation",
        (
            hashing_saturation(),
            hashing_queue(),
            hashing_rejections(),
            Panel(
                title="Database connection pool",
                description=(
                    "Connections checked out, idle, and the pool's maximum (size + overflow); waiting = requests "
                    "queued for a connection (sampled every 2 s). Sustained waiters fire "
                    "UserServiceDBPoolExhausted."
                ),
                targets=(
                    Target(
                        f"sum by (instance) (user_service_db_pool_connections_in_use{sel()})", "{{instance}} in use"
                    ),
                    Target(f"sum by (instance) (user_service_db_pool_connections_idle{sel()})", "{{instance}} idle"),
                    Target(f"sum by (instance) (user_service_db_pool_waiting{sel()})", "{{instance}} waiting"),
                    Target(f"sum by (instance) (user_service_db_pool_connections_max{sel()})", "{{instance}} max"),
                ),
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
        rows=(slo, traffic, saturation, mail, build),
    )
