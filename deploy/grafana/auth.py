"""The auth dashboard: logins, password hashing, tokens and sessions, the second factor, accounts."""

from __future__ import annotations

from deploy.grafana.model import (
    LOGIN_ROUTE,
    LOGIN_THRESHOLD_SECONDS,
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
from deploy.grafana.panels import (
    FAILED_LOGIN,
    HTTP_BUCKET,
    NOT_5XX,
    RATE,
    hashing_queue,
    hashing_rejections,
    hashing_saturation,
)

# --- auth ------------------------------------------------------------------------------------

LOGIN_SLO = SLOS.by_name("login-latency")


def auth() -> Dashboard:
    login_selector = sel(LOGIN_ROUTE, NOT_5XX)
    logins = Row(
        "Logins",
        (
            Panel(
                title="Login attempts by result",
                description=(
                    "success, failed (unknown name, wrong password, inactive or deleted account: one label, so "
                    "that the metrics cannot tell whether a name exists; the reason is in the login_failed log "
                    "events), shed (503, hashing pool full), throttled (429: the name has too many recent "
                    "failures; no hash computed). A wave of failed is credential stuffing "
                    "(UserServiceCredentialStuffing): count the login_failed events by reason."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_login_attempts_total{sel()}{RATE}))"), "{{result}}"
                    ),
                ),
                unit="reqps",
                stacked=True,
            ),
            Panel(
                title="Login failure ratio",
                description="Share of login attempts that did not succeed (any reason, sheds included).",
                targets=(
                    Target(
                        f"(\n  sum(rate(user_service_login_attempts_total{sel(FAILED_LOGIN)}{RATE}))\n"
                        "  or\n  vector(0)\n)\n/\n"
                        f"sum(rate(user_service_login_attempts_total{sel()}{RATE}))",
                        "failed",
                    ),
                ),
                unit="percentunit",
                maximum=1,
            ),
            Panel(
                title="Login latency",
                description=(
                    f"POST /api/v1/auth/login duration quantiles (5xx left out, as in the SLO). The dashed line "
                    f"is the SLO threshold, {LOGIN_THRESHOLD_SECONDS} s: {LOGIN_SLO.objective:g} % of logins must be "
                    "under it. Exemplar "
                    "dots link to the trace (its 'password verify' span shows queue wait and run time)."
                ),
                targets=tuple(
                    Target(
                        f"histogram_quantile({q}, sum by (le) (rate({HTTP_BUCKET}{login_selector}{RATE})))",
                        f"p{round(q * 100)}",
                        exemplar=True,
                    )
                    for q in QUANTILES
                ),
                unit="s",
                thresholds=(Threshold(None, "green"), Threshold(LOGIN_THRESHOLD_SECONDS, "red")),
            ),
            Panel(
                title=f"Logins faster than {LOGIN_THRESHOLD_SECONDS} s (SLI)",
                description=f"The login latency SLI over 5 minutes and 1 hour; the SLO is {LOGIN_SLO.objective:g} %.",
                targets=tuple(
                    Target(f"1 - {LOGIN_SLO.rule('ratio', window)}{sel(instance=False)}", window)
                    for window in ("5m", "1h")
                ),
                unit="percentunit",
                minimum=None,
                maximum=1,
                thresholds=(Threshold(None, "red"), Threshold(LOGIN_SLO.objective / 100, "green")),
            ),
        ),
    )

    def hash_quantiles(metric: str) -> tuple[Target, ...]:
        # Both hashing histograms carry the request's trace id as an exemplar.
        return tuple(
            Target(
                f"histogram_quantile({q}, sum by (operation, le) (rate({metric}{sel()}{RATE})))",
                f"p{round(q * 100)} {{{{operation}}}}",
                exemplar=True,
            )
            for q in QUANTILES
        )

    hashing = Row(
        "Password hashing",
        (
            Panel(
                title="Hash and verify duration",
                description=(
                    "argon2 time on a worker thread, per operation (hash = registration and password change, "
                    "verify = login). About 57 ms at default parameters on the 2-core reference machine; a "
                    "rise without a parameter change means CPU throttling or noisy neighbours."
                ),
                targets=hash_quantiles("user_service_password_hash_duration_seconds_bucket"),
                unit="s",
                width=8,
            ),
            Panel(
                title="Queue wait",
                description="Time a hash waited for a free worker before running. Above zero = the pool is saturated.",
                targets=hash_quantiles("user_service_password_hash_queue_wait_seconds_bucket"),
                unit="s",
                width=8,
            ),
            Panel(
                title="Hashes per second",
                description="Hash and verify throughput; the pool's ceiling is workers / duration.",
                targets=(
                    Target(
                        f"sum by (operation) (rate(user_service_password_hash_duration_seconds_count{sel()}{RATE}))",
                        "{{operation}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
            Panel(
                title="Hashing time on a core",
                description=(
                    "CPU the hashing threads got over their wall time, per operation. argon2 needs nothing but a "
                    "core, so this sits near 100 % on an idle pool and about 85 % at saturation on 2 cores (the "
                    "event loop and the database take the rest). Lower, with the duration rising: the threads "
                    "waited for a CPU (container CPU throttling, noisy neighbours), not slow hashing."
                ),
                targets=(
                    Target(
                        f"sum by (operation) (rate(user_service_password_hash_cpu_seconds_total{sel()}{RATE}))\n/\n"
                        f"sum by (operation) (rate(user_service_password_hash_duration_seconds_sum{sel()}{RATE}))",
                        "{{operation}}",
                    ),
                ),
                unit="percentunit",
                minimum=0,
                maximum=1,
                width=24,
                thresholds=(Threshold(None, "red"), Threshold(0.6, "green")),
            ),
            hashing_saturation(),
            hashing_queue(),
            hashing_rejections(),
        ),
    )
    tokens = Row(
        "Tokens and sessions",
        (
            Panel(
                title="Refresh outcomes",
                description=(
                    "rotated (success), unknown, expired, revoked, reused (a spent token presented again; its "
                    "session family is revoked), user_inactive."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_token_refreshes_total{sel()}{RATE}))"),
                        "{{result}}",
                    ),
                ),
                unit="reqps",
                width=8,
                stacked=True,
            ),
            Panel(
                title="Refresh-token reuse detections (15 min)",
                description=(
                    "Spent refresh tokens presented again in the last 15 minutes. The dashed line is the alert's "
                    "threshold (UserServiceRefreshTokenReuseSpike: more than 10, and over 1 % of refreshes). "
                    "Details: refresh_reuse_detected log events."
                ),
                targets=(
                    Target(f"sum(increase(user_service_refresh_token_reuse_detections_total{sel()}[15m]))", "reuses"),
                ),
                width=8,
                thresholds=(Threshold(None, "green"), Threshold(10, "red")),
            ),
            Panel(
                title="Tokens issued",
                description="Access and refresh tokens issued per second (logins and refreshes).",
                targets=(
                    Target(or_zero(f"sum by (kind) (rate(user_service_tokens_issued_total{sel()}{RATE}))"), "{{kind}}"),
                ),
                unit="ops",
                width=8,
            ),
        ),
    )
    second_factor = Row(
        "Sessions and second factor",
        (
            Panel(
                title="Active sessions",
                description=(
                    "Sessions neither revoked nor past their absolute lifetime (TOKENS__SESSION_MAX_AGE_SECONDS), "
                    "counted in the database by each process every 5 minutes (max across them: each counts every "
                    "session). An upper bound: an idle session whose refresh token expired counts until then."
                ),
                targets=(Target(f"max(user_service_sessions_active{sel()})", "active"),),
                width=8,
            ),
            Panel(
                title="Second-factor codes by result",
                description=(
                    "Codes checked per second, every purpose (login, confirm, disable, password_change, "
                    "email_change): success (TOTP), recovery_code, failed (wrong), replayed (already used), "
                    "throttled (the account's throttle refused it unheard), invalid_token (a bad or expired "
                    "mfa_token). Mostly failed, replayed or throttled: UserServiceMfaFailureSpike; the accounts "
                    "are in the mfa_code_refused log events."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_mfa_challenges_total{sel()}{RATE}))"),
                        "{{result}}",
                    ),
                ),
                unit="ops",
                width=8,
                stacked=True,
            ),
            Panel(
                title="Recovery codes used and enrolments (last hour)",
                description=(
                    "Recovery codes spent in the last hour (each a person without their authenticator, or a "
                    "stolen code sheet: UserServiceMfaRecoveryCodeUsed), and TOTP enrolments by result "
                    "(started, confirmed, refused)."
                ),
                targets=(
                    Target(
                        or_zero(f"sum(increase(user_service_mfa_recovery_codes_used_total{sel()}[1h]))"),
                        "recovery codes used",
                    ),
                    Target(
                        or_zero(f"sum by (result) (increase(user_service_mfa_enrolments_total{sel()}[1h]))"),
                        "enrolments {{result}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                title="Audit rows written by type",
                description=(
                    "Rows written to the audit trail (security_events) per second, by event type. Each row is "
                    "also a GET /users/me/events and /users/{id}/events entry."
                ),
                targets=(
                    Target(or_zero(f"sum by (type) (rate(user_service_audit_events_total{sel()}{RATE}))"), "{{type}}"),
                ),
                unit="ops",
                stacked=True,
            ),
            Panel(
                title="Rows purged by housekeeping (last hour)",
                description=(
                    "Rows deleted by the housekeeping round (every 5 minutes) in the last hour, by kind: ended "
                    "sessions, expired refresh tokens, known clients not seen for TOKENS__KNOWN_CLIENT_DAYS, audit "
                    "rows past AUDIT__RETENTION_DAYS (security_event), sent or given-up mails, used or expired "
                    "mailed-link tokens."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (kind) (increase(user_service_housekeeping_purged_total{sel()}[1h]))"),
                        "{{kind}}",
                    ),
                ),
            ),
        ),
    )
    accounts = Row(
        "Accounts",
        (
            Panel(
                title="Registrations by result",
                description=(
                    "created, conflict (username or email taken), invalid (rejected by the service's checks, "
                    "e.g. a weak password), shed (503)."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_registrations_total{sel()}{RATE}))"), "{{result}}"
                    ),
                ),
                unit="reqps",
                stacked=True,
            ),
            Panel(
                title="Account changes (last hour)",
                description=(
                    "password_changed, role_changed, deactivated, reactivated, deleted in the last hour. Who did "
                    "what: the role_changed, user_deactivated, user_reactivated and user_deleted log events."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (change) (increase(user_service_account_changes_total{sel()}[1h]))"),
                        "{{change}}",
                    ),
                ),
            ),
        ),
    )
    throttled = sel('result="throttled"')
    abuse = Row(
        "Abuse protection",
        (
            Panel(
                title="Rate-limited requests by route",
                description=(
                    "Requests refused with 429 by the per-client-address limit (USER_SERVICE_RATE_LIMITS__*). "
                    "A few addresses: clients or attackers being held back. Everyone at once: the service sees "
                    "every client as the ingress's address (USER_SERVICE_HTTP__TRUSTED_PROXIES); see the "
                    "UserServiceRateLimiting runbook. Addresses: the rate_limited log events."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (route) (rate(user_service_rate_limited_total{sel()}{RATE}))"), "{{route}}"
                    ),
                ),
                unit="reqps",
                stacked=True,
                width=8,
            ),
            Panel(
                title="Login throttle",
                description=(
                    "blocks: failed logins that blocked their account name (5 free failures, then 1, 2, 4 ... s up "
                    "to 5 min). throttled: logins refused during a block (429, no hash computed). Names under "
                    "attack: the login_throttle_engaged log events (user_id when the name is an account)."
                ),
                targets=(
                    Target(or_zero(f"sum(rate(user_service_login_throttle_blocks_total{sel()}{RATE}))"), "blocks"),
                    Target(
                        or_zero(f"sum(rate(user_service_login_attempts_total{throttled}{RATE}))"),
                        "throttled",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                title="Shared store (Redis) fallbacks",
                description=(
                    "Operations on Redis (USER_SERVICE_REDIS_URL) that failed and were served by the fallback: "
                    "rate_limit counted in the replica's memory (per replica: N replicas allow N times the budget), "
                    "login_throttle counted in PostgreSQL. Zero without Redis. See UserServiceSharedStoreDown."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (store) (rate(user_service_shared_store_errors_total{sel()}{RATE}))"),
                        "{{store}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
        ),
    )
    return Dashboard(
        uid="user-service-auth",
        title="User service / Auth",
        description=(
            "Logins, password hashing, refresh tokens, sessions and the second factor, account changes and "
            "abuse protection."
        ),
        filename="auth.json",
        rows=(logins, abuse, hashing, tokens, second_factor, accounts),
    )
