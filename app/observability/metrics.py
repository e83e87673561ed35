"""Prometheus metrics: RED per route template, the hashing pool, auth outcomes, DB pool.

Every app gets its own registry, so tests can build many apps in one process. With
PROMETHEUS_MULTIPROC_DIR set (several worker processes), prometheus-client writes the
values to memory-mapped files in that folder and a scrape of any worker aggregates all of
them: counters and histograms sum, gauges sum over live processes ("livesum").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# OpenTelemetry's recommended boundaries for http.server.request.duration, plus 1 and
# 2.5 ms below them: the probes, /users/me from the caller cache and the JWKS answer in about
# a millisecond, and OpenTelemetry's first boundary (5 ms) put them all in one bucket.
# The 5xx statuses the service answers with itself; start_error_series pre-creates them.
SERVICE_ERROR_STATUSES = ("500", "503")
HTTP_DURATION_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0),
)
# argon2 at production parameters takes tens of milliseconds; 10 ms to 2 s resolves it,
# with 60 and 70 ms around the default parameters' 57 ms verify, where a quantile would
# otherwise interpolate across 50-75 ms.
HASH_DURATION_BUCKETS = (0.01, 0.02, 0.03, 0.05, 0.06, 0.07, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# From a mail being asked for to its outcome: the worker polls every second, so most mails
# land under 5 s; 60 s is the delivery objective's boundary (deploy/slo/slos.yml), and the
# longer buckets resolve retries (minutes) up to the give-up age (a day by default).
MAIL_DELIVERY_AGE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


# One "failed" for every refused credential: separate unknown_user / wrong_password /
# inactive_user / deleted_user series would tell whoever can scrape /metrics whether the
# name just tried belongs to an account (issue 12, finding 7). The reason stays in the
# login_failed log event, which only operators read.
LOGIN_RESULTS = ("success", "failed", "shed", "throttled")
READINESS_STATES = ("ready", "not_ready")
# An idle loop wakes within a fraction of a millisecond; a request's synchronous stretch is
# a few; beyond 100 ms every request on the process waited that long.
EVENT_LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A warm pool hands a connection out in microseconds and a new one takes a few
# milliseconds; beyond 50 ms the checkout waited for another request to give one back. Up
# to the pool's timeout (5 s by default).
DB_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The routes with a per-address rate limit (the "route" label of rate_limited).
RATE_LIMITED_ROUTES = (
    "login",
    "register",
    "refresh",
    "password_check",
    "mail_request",
    "mail_per_address",
    "link_confirm",
)
REGISTRATION_RESULTS = ("created", "conflict", "invalid", "shed", "error")
REFRESH_RESULTS = ("rotated", "unknown", "expired", "revoked", "reused", "user_inactive")
# Checks of a known account's password outside login (the "purpose" label), and their results.
PASSWORD_CHECK_PURPOSES = ("password_change", "email_change", "mfa_enrol", "mfa_disable")
PASSWORD_CHECK_RESULTS = ("success", "failed", "throttled", "shed")
# What keeps its state in the shared store (Redis) when one is configured.
SHARED_STORE_USERS = ("rate_limit", "login_throttle")
ACCOUNT_CHANGES = (
    "password_changed",
    "role_changed",
    "deactivated",
    "reactivated",
    "deleted",
    "email_verified",
    "password_reset",
    "email_changed",
    "mfa_enabled",
    "mfa_disabled",
)
# The second factor: what became of a code presented for an account (the "result" label of
# mfa_challenges: at /login/mfa, and when confirming, disabling or a sensitive change), and
# of enrolments.
MFA_CHALLENGE_PURPOSES = ("login", "confirm", "disable", "password_change", "email_change")
MFA_CHALLENGE_RESULTS = ("success", "recovery_code", "failed", "replayed", "throttled", "invalid_token")
MFA_ENROLMENT_RESULTS = ("started", "confirmed", "refused")
# The mailed-link flows (verification, password reset, email change): what became of a
# request for a mail and of a link's confirmation. A request is only ever "accepted":
# whether a mail went out depends on whether the address has an account, which a scrape
# must not tell (the logs say it).
ACCOUNT_FLOWS = ("verify_email", "password_reset", "email_change")
ACCOUNT_FLOW_RESULTS = ("accepted", "confirmed", "invalid_token", "conflict")
# The audit trail's event types (API.md), one series each in audit_events.
SECURITY_EVENT_TYPES = (
    "registered",
    "login_succeeded",
    "login_failed",
    "login_throttled",
    "logged_out",
    "session_revoked",
    "refresh_reuse_detected",
    "password_changed",
    "password_reset_requested",
    "password_reset",
    "email_verified",
    "email_change_requested",
    "email_changed",
    "mfa_enabled",
    "mfa_disabled",
    "recovery_code_used",
    "role_changed",
    "deactivated",
    "reactivated",
    "deleted",
)
# What the housekeeping round deletes (the "kind" label of housekeeping_purged).
HOUSEKEEPING_KINDS = (
    "session",
    "refresh_token",
    "outbox_message",
    "account_token",
    "mfa_challenge",
    "known_client",
    "security_event",
)
# What became of one delivery attempt from the outbox (the "result" label).
MAIL_DELIVERY_RESULTS = ("sent", "failed", "gave_up")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def forget_dead_workers(directory: str) -> list[int]:
    """Drop the live gauges of worker processes that no longer exist; their pids.

    A worker that exits cleanly drops its own (``Metrics.process_exited``). One killed by
    SIGKILL or the OOM killer cannot, and the supervisor starts a new one beside its files:
    its ``livesum`` gauges (hashing workers, pool connections) would count twice for ever.
    Its counters stay, as they must: what it counted happened."""
    forgotten = []
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if pid not in forgotten and not _alive(pid):
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            forgotten.append(pid)
    return forgotten


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process (a reused pid): not ours to judge
        return True
    return True


@dataclass(frozen=True, slots=True)
class Exposition:
    body: bytes
    content_type: str


class Metrics:
    def __init__(self, *, service_version: str, commit: str, shared_store: bool = False) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        if not self.multiprocess:
            # Per-process collectors mean nothing summed across workers; single process only.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        r = self.registry

        # --- HTTP (OpenTelemetry semantic-convention names and attributes) -------------
        self.http_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, by route template.",
            ["http_request_method", "http_route", "http_response_status_code"],
            buckets=HTTP_DURATION_BUCKETS,
            registry=r,
        )
        self.http_active = Gauge(
            "http_server_active_requests",
            "HTTP requests being served right now.",
            ["http_request_method"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.http_errors = Counter(
            "http_server_errors",
            "HTTP requests answered with a 5xx, by route and error type (status code or exception).",
            ["http_request_method", "http_route", "error_type"],
            registry=r,
        )

        # --- Password hashing pool ------------------------------------------------------
        self.hash_duration = Histogram(
            "user_service_password_hash_duration_seconds",
            "Time one argon2 hash or verify ran on a worker thread.",
            ["operation"],
            buckets=HASH_DURATION_BUCKETS,
            registry=r,
        )
        self.hash_queue_wait = Histogram(
            "user_service_password_hash_queue_wait_seconds",
            "Time a hash or verify waited for a free worker.",
            ["operation"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.hash_cpu = Counter(
            "user_service_password_hash_cpu_seconds",
            "CPU time the worker threads got while hashing. Over the duration histogram's sum, "
            "the share of each hash spent on a core: argon2 needs nothing else, so a share well "
            "below 1 means the threads waited for a CPU (throttling, other processes, the event loop).",
            ["operation"],
            registry=r,
        )
        self.hash_running = Gauge(
            "user_service_password_hash_running",
            "Hashes running on the pool's worker threads.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.hash_queue_depth = Gauge(
            "user_service_password_hash_queue_depth",
            "Hashes waiting for a worker.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.hash_workers = Gauge(
            "user_service_password_hash_workers",
            "Worker threads of the hashing pool (saturation = running / workers).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.hash_queue_capacity = Gauge(
            "user_service_password_hash_queue_capacity",
            "Hashes that may wait before new ones are shed with 503.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.hash_rejections = Counter(
            "user_service_password_hash_rejections",
            "Hashes refused because the pool and its queue were full (answered 503).",
            ["operation"],
            registry=r,
        )

        # --- Accounts and tokens ----------------------------------------------------------
        self.login_attempts = Counter(
            "user_service_login_attempts",
            "Login attempts by result (success, failed, shed, throttled); why a login failed is in the logs only.",
            ["result"],
            registry=r,
        )
        self.registrations = Counter(
            "user_service_registrations",
            "Registration attempts by result (created, conflict, invalid, shed).",
            ["result"],
            registry=r,
        )
        self.tokens_issued = Counter(
            "user_service_tokens_issued",
            "Tokens issued, by kind (access, refresh).",
            ["kind"],
            registry=r,
        )
        self.token_refreshes = Counter(
            "user_service_token_refreshes",
            "Refresh attempts by result (rotated, unknown, expired, revoked, reused, user_inactive).",
            ["result"],
            registry=r,
        )
        self.refresh_reuse_detections = Counter(
            "user_service_refresh_token_reuse_detections",
            "Spent refresh tokens presented again (each revokes a session family).",
            registry=r,
        )
        self.login_throttle_blocks = Counter(
            "user_service_login_throttle_blocks",
            "Failed logins that blocked their account name for a while (each one starts or lengthens a block).",
            registry=r,
        )
        self.password_checks = Counter(
            "user_service_password_checks",
            "Checks of a signed-in account's current password (a password change), by purpose and result "
            "(success, failed, throttled, shed). A run of failures is someone with a session guessing.",
            ["purpose", "result"],
            registry=r,
        )
        self.account_flows = Counter(
            "user_service_account_flows",
            "Mailed-link flows (verify_email, password_reset, email_change) by result: accepted "
            "(a request; whether a mail went out is not told), confirmed, invalid_token (a "
            "bad, expired, used or outdated link), conflict (the new address was taken meanwhile).",
            ["flow", "result"],
            registry=r,
        )
        self.audit_events = Counter(
            "user_service_audit_events",
            "Rows written to the audit trail (security_events), by event type.",
            ["type"],
            registry=r,
        )
        self.housekeeping_purged = Counter(
            "user_service_housekeeping_purged",
            "Rows deleted by the periodic housekeeping, by kind (session: ended sessions with their tokens; "
            "refresh_token: expired refresh tokens, spent or not; outbox_message: mails sent or given up "
            "longer ago than USER_SERVICE_MAIL__KEEP_SENT_SECONDS; account_token and mfa_challenge: mailed-link "
            "tokens and second-factor login challenges a day after use or expiry; known_client: clients not "
            "seen for TOKENS__KNOWN_CLIENT_DAYS; security_event: the audit trail past AUDIT__RETENTION_DAYS).",
            ["kind"],
            registry=r,
        )
        self.mfa_challenges = Counter(
            "user_service_mfa_challenges",
            "Second-factor codes checked, by purpose (login, confirm, disable, password_change, email_change) "
            "and result (success: a TOTP code; recovery_code; failed: wrong; replayed: a code already used; "
            "throttled; invalid_token: a bad or expired mfa_token). A spike in failed is someone with a "
            "password guessing codes.",
            ["purpose", "result"],
            registry=r,
        )
        self.mfa_enrolments = Counter(
            "user_service_mfa_enrolments",
            "Second-factor enrolments by result (started, confirmed, refused: wrong password or already on).",
            ["result"],
            registry=r,
        )
        self.mfa_recovery_codes_used = Counter(
            "user_service_mfa_recovery_codes_used",
            "Recovery codes spent (each one is a person without their authenticator, or a stolen code sheet).",
            registry=r,
        )
        self.rate_limited = Counter(
            "user_service_rate_limited",
            "Requests refused with 429 by the per-client-address rate limit, by route (login, register, refresh).",
            ["route"],
            registry=r,
        )
        self.account_changes = Counter(
            "user_service_account_changes",
            "Administrative and self-service account changes, by kind.",
            ["change"],
            registry=r,
        )

        # --- Mail outbox --------------------------------------------------------------------
        # Sampled from the database by every delivering process: each sees the whole
        # outbox, so several processes report one value and "max" (not a sum) is right.
        self.mail_outbox_depth = Gauge(
            "user_service_mail_outbox_depth",
            "Mails in the outbox waiting to be sent (neither sent nor given up).",
            multiprocess_mode="max",
            registry=r,
        )
        self.mail_outbox_oldest_age = Gauge(
            "user_service_mail_outbox_oldest_unsent_age_seconds",
            "Age of the oldest mail waiting to be sent; 0 when none waits.",
            multiprocess_mode="max",
            registry=r,
        )
        self.mail_deliveries = Counter(
            "user_service_mail_deliveries",
            "Delivery attempts from the outbox by result (sent, failed: retried later, gave_up: never sent).",
            ["result"],
            registry=r,
        )
        self.mail_delivery_age = Histogram(
            "user_service_mail_delivery_age_seconds",
            "Time from a mail being written (by the request that asked for it) to its outcome, by result: "
            "sent, or gave_up (never sent). The mail-delivery objective reads it.",
            ["result"],
            buckets=MAIL_DELIVERY_AGE_BUCKETS,
            registry=r,
        )
        self.mail_retries = Counter(
            "user_service_mail_delivery_retries",
            "Delivery attempts of mails that had failed before (a retry, whatever its result).",
            registry=r,
        )

        # --- Sessions -------------------------------------------------------------------------
        # Counted in the database by every process (app/lifespan.py): each sees every session,
        # so several processes report one value; "livemax" takes the largest of the live
        # workers (a stopped worker's last count does not linger).
        self.sessions_active = Gauge(
            "user_service_sessions_active",
            "Sessions neither revoked nor past their absolute lifetime (TOKENS__SESSION_MAX_AGE_SECONDS), "
            "counted every 5 minutes; an idle session whose refresh token expired still counts until then.",
            multiprocess_mode="livemax",
            registry=r,
        )

        # --- Shared store (Redis) -----------------------------------------------------------
        self.shared_store_errors = Counter(
            "user_service_shared_store_errors",
            "Operations on the shared store (Redis) that failed and were served by the fallback "
            "(rate limits: this process's memory; login throttle: PostgreSQL), by what asked.",
            ["store"],
            registry=r,
        )
        # Registered only with a shared store configured: an unlabelled gauge is exported
        # (at 0) from its creation, which without Redis would read as "Redis down".
        # livemin: with several workers, one that cannot reach Redis shows as 0.
        self.shared_store_up = (
            Gauge(
                "user_service_shared_store_up",
                "1 while the shared store (Redis) answers, 0 while the fallbacks serve instead.",
                multiprocess_mode="livemin",
                registry=r,
            )
            if shared_store
            else None
        )

        self._add_runtime_metrics(r)

        self._start_known_series_at_zero()

        self.build_info = Gauge(
            "user_service_build_info",
            "Always 1; the labels name the running build.",
            ["version", "commit"],
            multiprocess_mode="max",
            registry=r,
        )
        self.build_info.labels(version=service_version, commit=commit).set(1)

    def _add_runtime_metrics(self, r: CollectorRegistry) -> None:
        """The process's own health: its event loop, its readiness, its database pool."""
        # How late the event loop runs a timer that asked for a fixed sleep: the wait every
        # request on the loop shares (a blocking call, a long synchronous stretch, or no core
        # for the loop). Sampled twice a second (app/observability/setup.py).
        self.event_loop_lag = Histogram(
            "user_service_event_loop_lag_seconds",
            "How much later than asked the event loop woke a sleeping timer.",
            buckets=EVENT_LOOP_LAG_BUCKETS,
            registry=r,
        )

        # Counted by the process that answered the probe, so it works across workers
        # (each counts its own flips) and at any probe period.
        self.readiness_transitions = Counter(
            "user_service_readiness_transitions_total",
            "Readiness answers that differed from the process's previous one, by the new state.",
            ["to"],
            registry=r,
        )

        # --- Database pool ----------------------------------------------------------------
        self.db_pool_in_use = Gauge(
            "user_service_db_pool_connections_in_use",
            "Database connections checked out of the pool.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.db_pool_idle = Gauge(
            "user_service_db_pool_connections_idle",
            "Open database connections waiting in the pool.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.db_pool_max = Gauge(
            "user_service_db_pool_connections_max",
            "Most connections the pool may open (pool size + overflow).",
            multiprocess_mode="livesum",
            registry=r,
        )
        # OpenTelemetry's db.client.connection.wait_time and .timeouts, as Prometheus names
        # them: counted facts about every checkout, where a sampled "waiting now" gauge saw
        # only the instants it happened to look at.
        self.db_connection_wait = Histogram(
            "db_client_connection_wait_time_seconds",
            "Time a checkout waited for a database connection from the pool (opening one included).",
            buckets=DB_WAIT_BUCKETS,
            registry=r,
        )
        self.db_connection_timeouts = Counter(
            "db_client_connection_timeouts",
            "Checkouts that gave up waiting for a database connection (USER_SERVICE_DB__POOL_TIMEOUT_SECONDS).",
            registry=r,
        )

    def _start_known_series_at_zero(self) -> None:
        # A labelled counter has no series until its first increment, so rate() over the
        # first burst (the first shed, the first reuse) would show nothing. Every value
        # the service can emit exists from the start, at 0.
        known: list[tuple[Counter, str, tuple[str, ...]]] = [
            (self.login_attempts, "result", LOGIN_RESULTS),
            (self.registrations, "result", REGISTRATION_RESULTS),
            (self.token_refreshes, "result", REFRESH_RESULTS),
            (self.tokens_issued, "kind", ("access", "refresh")),
            (self.hash_rejections, "operation", ("hash", "verify")),
            (self.hash_cpu, "operation", ("hash", "verify")),
            (self.account_changes, "change", ACCOUNT_CHANGES),
            (self.rate_limited, "route", RATE_LIMITED_ROUTES),
            (self.housekeeping_purged, "kind", HOUSEKEEPING_KINDS),
            (self.audit_events, "type", SECURITY_EVENT_TYPES),
            (self.mail_deliveries, "result", MAIL_DELIVERY_RESULTS),
            (self.shared_store_errors, "store", SHARED_STORE_USERS),
            (self.mfa_enrolments, "result", MFA_ENROLMENT_RESULTS),
            (self.readiness_transitions, "to", READINESS_STATES),
        ]
        for counter, label, values in known:
            for label_value in values:
                counter.labels(**{label: label_value})
        # The age histogram too: a series born at its first observation hides that mail from
        # rate() (there is no earlier sample to increase from), and a single mail given up
        # is the delivery objective's whole signal on a quiet service.
        for outcome in ("sent", "gave_up"):
            self.mail_delivery_age.labels(result=outcome)
        for purpose in PASSWORD_CHECK_PURPOSES:
            for result in PASSWORD_CHECK_RESULTS:
                self.password_checks.labels(purpose=purpose, result=result)
        for flow in ACCOUNT_FLOWS:
            for result in ACCOUNT_FLOW_RESULTS:
                self.account_flows.labels(flow=flow, result=result)
        for purpose in MFA_CHALLENGE_PURPOSES:
            for result in MFA_CHALLENGE_RESULTS:
                self.mfa_challenges.labels(purpose=purpose, result=result)

    def start_error_series(self, routes: Iterable[tuple[str, str]]) -> None:
        """The 5xx series of each (method, route template) at 0 before its first failure.

        rate() and increase() see a series' first sample as its start, so a failure that
        creates its series is invisible to them: on a quiet service the first 500 of a route
        would never reach the availability SLO nor page. Only the statuses the service itself
        answers with (500 for a fault, 503 for a shed or an unready dependency), and only for
        the routes given (the API's), which bounds the cost at 2 x (buckets + 3) series per
        route and method.
        """
        for method, route in routes:
            for status in SERVICE_ERROR_STATUSES:
                self.http_duration.labels(
                    http_request_method=method, http_route=route, http_response_status_code=status
                )
                self.http_errors.labels(http_request_method=method, http_route=route, error_type=status)

    def expose(self, accept_header: str) -> Exposition:
        """The text a scrape gets: OpenMetrics (with exemplars) when asked for, else Prometheus text."""
        registry = self.registry
        if self.multiprocess and (directory := multiprocess_dir()) is not None:
            # Every scrape, not only at a worker's start: a killed worker's gauges go at the
            # next scrape, whether or not the supervisor has replaced it yet.
            forget_dead_workers(directory)
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        encoder, content_type = choose_encoder(accept_header)
        return Exposition(body=encoder(registry), content_type=content_type)

    def process_exited(self) -> None:
        """Drop this worker's live gauges so a restarted worker does not double them."""
        if (directory := multiprocess_dir()) is not None:
            mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
