"""The outbox's queries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import OutboxMessage

_PENDING = (OutboxMessage.sent_at.is_(None), OutboxMessage.gave_up_at.is_(None))


def next_due(dialect: str, now: dt.datetime) -> Select[OutboxMessage]:
    """The pending row that fell due first.

    On PostgreSQL it is locked ``FOR UPDATE SKIP LOCKED``: another worker (a replica, the
    CLI deployment) skips it and takes the next one, so two workers never hold one row,
    and the lock lasts until the transaction that sends it and marks it commits. SQLite has
    no row locks; there one worker per database delivers (see worker.py)."""
    query = select(OutboxMessage).where(*_PENDING, OutboxMessage.next_attempt_at <= now)
    query = query.order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(1)
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query


@dataclass(frozen=True, slots=True)
class OutboxState:
    depth: int
    oldest_created_at: dt.datetime | None


async def outbox_state(session: AsyncSession) -> OutboxState:
    row = (await session.execute(select(func.count(), func.min(OutboxMessage.created_at)).where(*_PENDING))).one()
    return OutboxState(depth=row[0], oldest_created_at=row[1])


async def purge_finished(engine: AsyncEngine, *, ended_before: dt.datetime) -> int:
    """Delete the rows sent or given up before ``ended_before``; returns how many.

    A pending row (neither sent nor given up) is never deleted, however old: both of its
    end columns are NULL, which no comparison matches. There is no index on the end
    columns (the partial index holds pending rows only), so this scans the table: with
    rows kept a week and a round every few minutes, that is a week of mail at most."""
    finished_long_ago = or_(OutboxMessage.sent_at < ended_before, OutboxMessage.gave_up_at < ended_before)
    async with engine.begin() as conn:
        result = await conn.execute(delete(OutboxMessage).where(finished_long_ago))
    return result.rowcount or 0
