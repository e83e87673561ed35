"""The audit trail (table security_events): what happened to an account, when, from
where and by whom, for its owner (/users/me/events), for an admin (/users/{id}/events)
and for whoever investigates a take-over.

A use case records its event in its own transaction, before it commits: the row exists
if and only if the change does. Failed logins are recorded only for a known account;
guesses at names nobody has stay in the metrics and logs (a table of them would be a list
of what attackers typed). ``detail`` is small and never holds a secret."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import SecurityEvent, utcnow
from app.observability.metrics import SECURITY_EVENT_TYPES
from app.web.after_response import after_response

if TYPE_CHECKING:
    from app.accounts.sessions import ClientInfo

# API.md's list, in one place (the metric pre-creates a series per type).
EVENT_TYPES = SECURITY_EVENT_TYPES


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where the request that caused an event came from (all optional: the CLI has none)."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    trace_id: str | None = None

    @classmethod
    def of(cls, client: ClientInfo, request_id: str | None, trace_id: str | None) -> RequestContext:
        return cls(ip=client.ip, user_agent=client.user_agent, request_id=request_id, trace_id=trace_id)


@dataclass(frozen=True, slots=True)
class EventPage:
    items: Sequence[SecurityEvent]
    total: int


@dataclass
class AuditTrail:
    db: AsyncSession
    context: RequestContext = field(default_factory=RequestContext)
    # Called with the type of every row written (the metric of rows written).
    on_written: Callable[[str], None] | None = None

    # Opens a session of its own, for rows written after the response (see defer); None
    # where there is none (then they are written in ``db`` at once).
    session_factory: Callable[[], Any] | None = None

    def record(self, event_type: str, user_id: UUID, *, actor_id: UUID | None = None, **detail: Any) -> None:
        """Add the event to the caller's transaction (written when it commits)."""
        self.db.add(self._row(event_type, user_id, actor_id, detail))
        if self.on_written is not None:
            self.on_written(event_type)

    async def defer(self, event_type: str, user_id: UUID, **detail: Any) -> None:
        """An event with no transaction of its own (a failed login of a known account),
        written after the response is sent: writing it first would make a wrong password
        slower to answer than an unknown name, which tells who has an account."""
        row = self._row(event_type, user_id, None, detail)
        factory = self.session_factory

        async def write() -> None:
            if factory is None:
                return
            async with factory() as db:
                db.add(row)
                await db.commit()

        if factory is None or not after_response(write):
            self.db.add(row)
            await self.db.commit()
        if self.on_written is not None:
            self.on_written(event_type)

    def _row(self, event_type: str, user_id: UUID, actor_id: UUID | None, detail: dict[str, Any]) -> SecurityEvent:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown security event type {event_type!r}")
        context = self.context
        return SecurityEvent(
            user_id=user_id,
            actor_id=actor_id if actor_id != user_id else None,
            type=event_type,
            at=utcnow(),
            ip=context.ip,
            user_agent=context.user_agent,
            request_id=context.request_id,
            trace_id=context.trace_id,
            detail={key: value for key, value in detail.items() if value is not None},
        )

    async def page_of(self, user_id: UUID, *, limit: int, offset: int) -> EventPage:
        """The account's events, newest first."""
        total = (
            await self.db.execute(
                select(func.count()).select_from(SecurityEvent).where(SecurityEvent.user_id == user_id)
            )
        ).scalar_one()
        rows = (
            await self.db.execute(
                select(SecurityEvent)
                .where(SecurityEvent.user_id == user_id)
                .order_by(SecurityEvent.at.desc(), SecurityEvent.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).scalars()
        return EventPage(items=list(rows), total=int(total))


async def purge_old_events(engine: AsyncEngine, *, before: dt.datetime) -> int:
    """Housekeeping: events older than the retention."""
    async with engine.begin() as conn:
        result = await conn.execute(delete(SecurityEvent).where(SecurityEvent.at < before))
    return int(result.rowcount or 0)
