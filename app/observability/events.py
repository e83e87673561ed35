"""Security and account events: one structured log line with a stable name, plus the
matching metric. Business code calls these methods and knows nothing of either backend."""

from __future__ import annotations

from uuid import UUID

from app.observability.logging import get_logger
from app.observability.metrics import Metrics

_log = get_logger("user_service.security")


class SecurityEvents:
    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    def login_succeeded(self, user_id: UUID, *, rehashed: bool) -> None:
        _log.info("login_succeeded", user_id=str(user_id), rehashed=rehashed)
        if self._metrics:
            self._metrics.login_attempts.labels(result="success").inc()

    def login_shed_at_edge(self) -> None:
        """A login shed before it was read (app/web/shedding.py): counted, not logged. Its
        access line says it; a warning each would be a log storm during the overload it is."""
        if self._metrics:
            self._metrics.login_attempts.labels(result="shed").inc()

    def login_failed(self, reason: str, user_id: UUID | None = None) -> None:
        """``reason``: unknown_user, wrong_password, inactive_user, deleted_user, shed. The log
        keeps it; the metric folds the four credential failures into ``failed``, so that a
        scrape cannot tell an unknown name from a known one."""
        _log.warning("login_failed", reason=reason, user_id=str(user_id) if user_id else None)
        if self._metrics:
            self._metrics.login_attempts.labels(result="shed" if reason == "shed" else "failed").inc()

    def login_throttled(self, failures: int, retry_after_seconds: int) -> None:
        """A login refused unheard because its name has too many recent failures."""
        _log.warning("account_throttled", failures=failures, retry_after_seconds=retry_after_seconds)
        if self._metrics:
            self._metrics.login_attempts.labels(result="throttled").inc()

    def login_throttle_engaged(self, failures: int, block_seconds: int) -> None:
        """A failure past the free ones blocks its name: the start (or a lengthening) of a
        back-off."""
        _log.warning("login_throttle_engaged", failures=failures, block_seconds=block_seconds)
        if self._metrics:
            self._metrics.login_throttle_blocks.inc()

    def password_check(self, purpose: str, result: str, user_id: UUID, **details: int) -> None:
        """A signed-in account's current password checked (``purpose``: password_change):
        ``result`` success, failed, throttled or shed."""
        if result != "success":
            _log.warning("password_check_refused", purpose=purpose, result=result, user_id=str(user_id), **details)
        if self._metrics:
            self._metrics.password_checks.labels(purpose=purpose, result=result).inc()

    def purged(self, kind: str, rows: int) -> None:
        """Housekeeping deleted ``rows`` of ``kind``: session and refresh_token (they can never
        authenticate again), outbox_message (mails sent or given up long enough ago)."""
        if rows:
            _log.info("housekeeping_purged", kind=kind, rows=rows)
        if self._metrics:
            self._metrics.housekeeping_purged.labels(kind=kind).inc(rows)

    def sessions_counted(self, active: int) -> None:
        """The periodic count of live sessions (neither revoked nor past their lifetime)."""
        if self._metrics:
            self._metrics.sessions_active.set(active)

    def rate_limited(self, route: str, client: str | None) -> None:
        _log.warning("rate_limited", route=route, client=client)
        if self._metrics:
            self._metrics.rate_limited.labels(route=route).inc()

    def shared_store_failed(self, store: str | None, error: BaseException, *, was_up: bool) -> None:
        """An operation on Redis failed and its fallback served it. Logged once per outage
        (a dead Redis would otherwise log every request), counted every time."""
        if was_up:
            _log.error("shared_store_unavailable", store=store, error=type(error).__name__, detail=str(error)[:200])
        if self._metrics:
            if store is not None:
                self._metrics.shared_store_errors.labels(store=store).inc()
            if self._metrics.shared_store_up is not None:
                self._metrics.shared_store_up.set(0)

    def shared_store_available(self, *, was_up: bool | None) -> None:
        """Redis answered (``was_up`` None: the first time, at start-up)."""
        if was_up is False:
            _log.warning("shared_store_recovered")
        if self._metrics and self._metrics.shared_store_up is not None:
            self._metrics.shared_store_up.set(1)

    def registration(self, result: str, user_id: UUID | None = None) -> None:
        """``result``: created, conflict, invalid, shed."""
        if result == "created":
            _log.info("user_registered", user_id=str(user_id))
        if self._metrics:
            self._metrics.registrations.labels(result=result).inc()

    def tokens_issued(self, *, access: int = 0, refresh: int = 0) -> None:
        if self._metrics:
            if access:
                self._metrics.tokens_issued.labels(kind="access").inc(access)
            if refresh:
                self._metrics.tokens_issued.labels(kind="refresh").inc(refresh)

    def refresh(self, result: str, user_id: UUID | None = None, session_id: UUID | None = None) -> None:
        if result == "reused":
            _log.warning(
                "refresh_reuse_detected",
                user_id=str(user_id) if user_id else None,
                session_id=str(session_id) if session_id else None,
            )
            if self._metrics:
                self._metrics.refresh_reuse_detections.inc()
        if self._metrics:
            self._metrics.token_refreshes.labels(result=result).inc()

    def logged_out(self, user_id: UUID | None, session_id: UUID) -> None:
        _log.info("logged_out", user_id=str(user_id) if user_id else None, session_id=str(session_id))

    def session_revoked(self, user_id: UUID, session_id: UUID, *, by: UUID) -> None:
        _log.info("session_revoked", user_id=str(user_id), session_id=str(session_id), actor_id=str(by))

    def sessions_revoked(self, user_id: UUID, *, by: UUID) -> None:
        """Every session of a user ended (all but the caller's own when ``by`` is the user)."""
        _log.warning("sessions_revoked", user_id=str(user_id), actor_id=str(by))

    def new_client_login(self, user_id: UUID) -> None:
        """A login from a client pair never seen for the account: its owner was mailed."""
        _log.info("login_from_new_client", user_id=str(user_id))

    def password_changed(self, user_id: UUID) -> None:
        _log.info("password_changed", user_id=str(user_id))
        self._count_change("password_changed")

    def role_changed(self, *, actor_id: UUID, user_id: UUID, old_role: str, new_role: str) -> None:
        _log.warning("role_changed", actor_id=str(actor_id), user_id=str(user_id), old_role=old_role, new_role=new_role)
        self._count_change("role_changed")

    def activation_changed(self, *, actor_id: UUID, user_id: UUID, is_active: bool) -> None:
        name = "user_reactivated" if is_active else "user_deactivated"
        _log.warning(name, actor_id=str(actor_id), user_id=str(user_id))
        self._count_change(name.removeprefix("user_"))

    def user_deleted(self, *, actor_id: UUID, user_id: UUID) -> None:
        _log.warning("user_deleted", actor_id=str(actor_id), user_id=str(user_id))
        self._count_change("deleted")

    def account_flow_requested(self, flow: str, outcome: str, user_id: UUID | None = None) -> None:
        """A mail of ``flow`` asked for. ``outcome`` (sent, unknown_address, inactive,
        already_verified, taken) is logged for the operator; the metric counts only that
        it was accepted, so a scrape cannot tell who has an account."""
        _log.info(f"{flow}_requested", outcome=outcome, user_id=str(user_id) if user_id else None)
        if self._metrics:
            self._metrics.account_flows.labels(flow=flow, result="accepted").inc()

    def account_flow_confirmed(self, flow: str, user_id: UUID) -> None:
        """A mailed link confirmed: the account's address verified, its password reset or
        its address changed."""
        change = {"verify_email": "email_verified", "password_reset": "password_reset", "email_change": "email_changed"}
        _log.warning(change[flow], user_id=str(user_id))
        self._count_change(change[flow])
        if self._metrics:
            self._metrics.account_flows.labels(flow=flow, result="confirmed").inc()

    def account_flow_refused(self, flow: str, result: str, reason: str, user_id: UUID | None = None) -> None:
        """A link refused (``result`` invalid_token or conflict); ``reason`` says why for the
        operator: unknown, outdated, inactive, spent."""
        _log.warning("account_link_refused", flow=flow, reason=reason, user_id=str(user_id) if user_id else None)
        if self._metrics:
            self._metrics.account_flows.labels(flow=flow, result=result).inc()

    def audit_written(self, event_type: str) -> None:
        if self._metrics:
            self._metrics.audit_events.labels(type=event_type).inc()

    def mfa_enrolment(self, result: str, user_id: UUID) -> None:
        """``result``: started (a secret handed out, pending), confirmed, refused."""
        if result == "confirmed":
            _log.warning("mfa_enabled", user_id=str(user_id))
            self._count_change("mfa_enabled")
        elif result == "started":
            _log.info("mfa_enrolment_started", user_id=str(user_id))
        if self._metrics:
            self._metrics.mfa_enrolments.labels(result=result).inc()

    def mfa_disabled(self, user_id: UUID, actor_id: UUID | None = None) -> None:
        """The factor is off: by its owner, or by the admin ``actor_id``."""
        _log.warning("mfa_disabled", user_id=str(user_id), **({"actor_id": str(actor_id)} if actor_id else {}))
        self._count_change("mfa_disabled")

    def mfa_required(self, user_id: UUID) -> None:
        """A right password for an account with a second factor: an mfa_token was issued."""
        _log.info("mfa_challenge_issued", user_id=str(user_id))

    def mfa_challenge(self, purpose: str, result: str, user_id: UUID | None = None, **details: int) -> None:
        """A code checked for ``purpose`` (login, confirm, disable, password_change,
        email_change); see the metric for ``result``."""
        if result == "recovery_code":
            _log.warning("recovery_code_used", purpose=purpose, user_id=str(user_id), **details)
            if self._metrics:
                self._metrics.mfa_recovery_codes_used.inc()
        elif result != "success":
            _log.warning(
                "mfa_code_refused", purpose=purpose, result=result, user_id=str(user_id) if user_id else None, **details
            )
        if self._metrics:
            self._metrics.mfa_challenges.labels(purpose=purpose, result=result).inc()

    def _count_change(self, change: str) -> None:
        if self._metrics:
            self._metrics.account_changes.labels(change=change).inc()
