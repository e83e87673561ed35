"""Start-up and shutdown: hashing pool, schema (migrated or checked), draining."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Litestar
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.account_tokens import purge_finished_tokens
from app.accounts.audit import purge_old_events
from app.accounts.mfa_store import purge_ended_challenges
from app.accounts.sessions import Purged, forget_known_clients, purge_ended_sessions
from app.container import Container
from app.db.migrate import SchemaFit, schema_state, upgrade_to_head
from app.db.models import AuthSession
from app.identity.memory import keep_hash_memory_mapped
from app.identity.throttle import LoginThrottle
from app.mail.repository import purge_finished
from app.mail.transports import warn_if_mail_reaches_nobody
from app.observability.logging import get_logger
from app.settings import Environment
from app.system.health import Lifecycle
from app.system.metrics import MetricsListener
from app.system.shutdown import drain_on_sigterm
from app.web.shared_store import FailoverStore

logger = get_logger("user_service.lifecycle")

SCHEMA_RETRY_SECONDS = 2.0
HOUSEKEEPING_SECONDS = 300.0
ACCOUNT_TOKENS_KEPT = dt.timedelta(days=1)


async def _await_current_schema(config: SQLAlchemyAsyncConfig, lifecycle: Lifecycle) -> None:
    """Mark start-up done once the database answers with a schema this release can serve:
    at its migrations' head, or ahead of it by revisions that only expand it (a rollback
    after a newer release migrated; app/db/migrate.py).

    Retries rather than exits: the migration job may still be running, the database may
    come up after the pod, or a schema too new may be downgraded; the startup probe
    reports what is missing meanwhile.
    """
    engine = config.get_engine()
    while True:
        try:
            state = await schema_state(engine)
        except Exception as exc:  # noqa: BLE001 - unreachable database: report and retry
            lifecycle.startup_problem = f"database unreachable ({type(exc).__name__})"
        else:
            if state.serves:
                if state.fit is SchemaFit.AHEAD_COMPATIBLE:
                    logger.warning(
                        "schema_ahead_of_release",
                        database=list(state.database_heads),
                        release=list(state.code_heads),
                        oldest_compatible=state.oldest_compatible,
                    )
                lifecycle.startup_problem = None
                lifecycle.started = True
                return
            lifecycle.startup_problem = state.problem
        logger.warning("startup_waiting", problem=lifecycle.startup_problem)
        await asyncio.sleep(SCHEMA_RETRY_SECONDS)


def lifespan_of(container: Container) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Litestar's lifespan hook for an app built on ``container``."""

    def for_app(_: Litestar) -> AbstractAsyncContextManager[None]:
        return lifespan(container)

    return for_app


@contextlib.asynccontextmanager
async def lifespan(container: Container) -> AsyncGenerator[None, None]:
    settings = container.settings
    hasher = container.hasher
    breach_checker = container.breach_checker
    db_config = container.database
    lifecycle = container.lifecycle
    observability = container.observability

    async with contextlib.AsyncExitStack() as stack:
        # Unwound in reverse on shutdown, and on a failed start-up as well.
        stack.callback(observability.shutdown)
        stack.push_async_callback(breach_checker.aclose)
        stack.callback(hasher.shutdown)
        if settings.passwords.keep_memory_mapped:
            logger.info("allocator_tuned_for_hashing", applied=keep_hash_memory_mapped())
        await hasher.start()
        if settings.db.should_migrate_on_start:
            await upgrade_to_head(db_config.get_engine())
        if (redis := container.redis) is not None:
            stack.push_async_callback(redis.aclose)
        if (listener := settings.metrics_listener) is not None and observability.metrics is not None:
            # Closed after the drain (the stack unwinds in reverse): a scrape still sees the
            # last requests of a stopping pod.
            metrics_listener = MetricsListener(observability.metrics, *listener)
            await metrics_listener.start()
            stack.push_async_callback(metrics_listener.close)
        background_tasks = [
            _await_current_schema(db_config, lifecycle),
            observability.sample_db_pool(db_config.get_engine(), settings.db.pool_size + settings.db.max_overflow),
            _housekeeping(container),
        ]
        if observability.metrics is not None:
            background_tasks.append(_count_sessions(container))
            background_tasks.append(observability.sample_event_loop_lag())
        if redis is not None and container.shared_store_health is not None:
            # Keeps user_service_shared_store_up true while no request uses Redis, and ends
            # an outage's fallback as soon as Redis answers again.
            background_tasks.append(container.shared_store_health.probe_forever(redis.ping))
        for background in background_tasks:
            stack.push_async_callback(_cancel, asyncio.create_task(background))
        if settings.mail.worker_enabled:
            stop_delivering = asyncio.Event()
            delivery = asyncio.create_task(deliver_mail(container, stop_delivering))
            stack.push_async_callback(_stop_delivery, delivery, stop_delivering, settings.mail.smtp_timeout_seconds)
        stack.callback(drain_on_sigterm(lifecycle, settings.http.drain_seconds))
        # Everything alive now (modules, app, routes, pools) lives as long as the process:
        # frozen, the cyclic collector stops re-scanning it in every full collection,
        # which took GET /users/me p99 from 73 ms to 10 ms (README, "Performance").
        gc.collect()
        gc.freeze()
        # Hand it back at shutdown, or cyclic garbage among it could never be collected
        # (it matters where one process builds many apps: the test suite).
        stack.callback(gc.unfreeze)
        logger.info("service_started", service=settings.service_name, environment=settings.environment.value)
        if settings.environment is Environment.PRODUCTION:
            for protection in settings.disabled_protections():
                logger.warning("abuse_protection_off", setting=protection)
            if settings.mail.worker_enabled:
                # Otherwise `litestar mail deliver` delivers, and warns from its own settings.
                warn_if_mail_reaches_nobody(settings.mail)
        try:
            yield
        finally:
            lifecycle.draining = True
            logger.info("service_stopping")


async def _housekeeping(container: Container) -> None:
    """What would otherwise only go when its key is seen again, or never: old failed-login
    counters and expired rate-limit windows (a credential-stuffing run sees millions of
    keys once each; Redis expires its keys by itself), ended sessions and expired
    refresh tokens (one row per login and per rotation), the outbox's sent and
    given-up mails (one row per mail), used or expired mailed-link tokens and second-factor
    challenges, clients not seen for long, and the audit trail past its retention."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        await forget_stale_abuse_state(container.login_throttle, container.rate_limit_store)
        await purge_ended_sessions_round(container)
        await purge_outbox_round(container)
        await purge_account_tokens_round(container)
        await purge_mfa_challenges_round(container)
        await purge_audit_round(container)


async def _count_sessions(container: Container) -> None:
    """user_service_sessions_active: counted once the schema is current (so a restarted
    process does not show 0 for a whole period), then every HOUSEKEEPING_SECONDS."""
    while True:
        if container.lifecycle.started:
            await count_sessions_round(container)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
        else:
            await asyncio.sleep(SCHEMA_RETRY_SECONDS)


async def count_live_sessions(engine: AsyncEngine, *, now: dt.datetime, session_max_age_seconds: int) -> int:
    """Sessions neither revoked nor past their absolute lifetime. An upper bound of the
    sessions in use: one idle past its refresh token's expiry still counts until then."""
    live = (
        select(func.count())
        .select_from(AuthSession)
        .where(
            AuthSession.revoked_at.is_(None),
            AuthSession.created_at > now - dt.timedelta(seconds=session_max_age_seconds),
        )
    )
    async with engine.connect() as conn:
        return int((await conn.execute(live)).scalar_one())


async def count_sessions_round(container: Container) -> int | None:
    """One count of the live sessions into user_service_sessions_active; a failure (the
    database away) is logged, leaves the last value, and is retried next round."""
    try:
        active = await count_live_sessions(
            container.database.get_engine(),
            now=dt.datetime.now(dt.UTC),
            session_max_age_seconds=container.settings.tokens.session_max_age_seconds,
        )
    except Exception as exc:  # noqa: BLE001 - the database may be away; try again next time
        logger.warning("housekeeping_failed", error=type(exc).__name__)
        return None
    container.events.sessions_counted(active)
    return active


async def purge_ended_sessions_round(container: Container) -> Purged | None:
    """One round of the session purge (see purge_ended_sessions), logged and counted; a
    failure (the database away) is logged and left for the next round."""
    tokens = container.settings.tokens
    try:
        purged = await purge_ended_sessions(
            container.database.get_engine(),
            now=dt.datetime.now(dt.UTC),
            session_max_age_seconds=tokens.session_max_age_seconds,
            # Past any access token of theirs (plus its clock leeway): nothing is cut short.
            keep_ended_for_seconds=tokens.access_ttl_seconds + tokens.leeway_seconds,
        )
    except Exception as exc:  # noqa: BLE001 - the database may be away; try again next time
        logger.warning("housekeeping_failed", error=type(exc).__name__)
        return None
    container.events.purged("session", purged.sessions)
    container.events.purged("refresh_token", purged.refresh_tokens)
    seen_before = dt.datetime.now(dt.UTC) - dt.timedelta(days=tokens.known_client_days)
    await _counted_purge(
        container, "known_client", forget_known_clients(container.database.get_engine(), seen_before=seen_before)
    )
    return purged


async def _counted_purge(container: Container, kind: str, purge: Coroutine[Any, Any, int]) -> int | None:
    """Await one purge (its own transaction, so a failure leaves the others done) and count
    the rows of ``kind`` it deleted; a failure (the database away) is logged and left for
    the next round."""
    try:
        purged = await purge
    except Exception as exc:  # noqa: BLE001 - the database may be away; try again next time
        logger.warning("housekeeping_failed", error=type(exc).__name__)
        return None
    container.events.purged(kind, purged)
    return purged


async def purge_outbox_round(container: Container) -> int | None:
    """The outbox purge: sent and given-up mails that ended more than
    USER_SERVICE_MAIL__KEEP_SENT_SECONDS ago (see purge_finished)."""
    ended_before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=container.settings.mail.keep_sent_seconds)
    return await _counted_purge(
        container, "outbox_message", purge_finished(container.database.get_engine(), ended_before=ended_before)
    )


async def purge_account_tokens_round(container: Container) -> int | None:
    """The mailed-link token purge: used or expired a day ago or more (a day in which
    support can still see that a link was used)."""
    ended_before = dt.datetime.now(dt.UTC) - ACCOUNT_TOKENS_KEPT
    return await _counted_purge(
        container, "account_token", purge_finished_tokens(container.database.get_engine(), ended_before=ended_before)
    )


async def purge_mfa_challenges_round(container: Container) -> int | None:
    """The second factor's login challenges, a day after they expired or were redeemed (as
    the mailed-link tokens: a replayed token is still traced to its account meanwhile)."""
    ended_before = dt.datetime.now(dt.UTC) - ACCOUNT_TOKENS_KEPT
    return await _counted_purge(
        container, "mfa_challenge", purge_ended_challenges(container.database.get_engine(), ended_before=ended_before)
    )


async def purge_audit_round(container: Container) -> int | None:
    """The audit trail's retention (AUDIT__RETENTION_DAYS)."""
    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=container.settings.audit.retention_days)
    return await _counted_purge(
        container, "security_event", purge_old_events(container.database.get_engine(), before=before)
    )


async def forget_stale_abuse_state(throttle: LoginThrottle, rate_limits: Store) -> int:
    """One round of that housekeeping; returns the throttle entries forgotten. A failure
    (the database away) is logged and left for the next round."""
    try:
        forgotten = await throttle.forget_stale()
        if isinstance(rate_limits, MemoryStore):
            await rate_limits.delete_expired()
        elif isinstance(rate_limits, FailoverStore):
            await rate_limits.local.delete_expired()  # what an outage of Redis left in memory
    except Exception as exc:  # noqa: BLE001 - the database may be away; try again next time
        logger.warning("housekeeping_failed", error=type(exc).__name__)
        return 0
    if forgotten:
        logger.info("login_throttle_forgotten", entries=forgotten)
    return forgotten


async def deliver_mail(container: Container, stop: asyncio.Event) -> None:
    """The outbox's delivery worker, once the schema is current (before, every round would
    fail on a missing table)."""
    while not container.lifecycle.started:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SCHEMA_RETRY_SECONDS)
        if stop.is_set():
            return
    mail = container.settings.mail
    if mail.uses_smtp:
        logger.info("mail_delivery_started", transport="smtp", host=mail.smtp_host, port=mail.smtp_port)
    else:
        logger.info("mail_delivery_started", transport="file", directory=str(mail.file_directory.resolve()))
    await container.outbox_worker().run(stop)


async def _stop_delivery(task: asyncio.Task[None], stop: asyncio.Event, smtp_timeout_seconds: float) -> None:
    """Let the mail being sent finish and be marked (a send cut off after the server's 250
    would be sent again after the restart); cancel only if it outlasts the SMTP timeouts."""
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), smtp_timeout_seconds * 2 + 5)
    except TimeoutError:
        await _cancel(task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
