"""The account's activity as its owner sees it: /api/v1/users/me/sessions (login
sessions, listed and ended) and /api/v1/users/me/events (the audit trail)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.audit import EventPage
from app.accounts.authentication import AuthedRequest
from app.accounts.dependencies import audit_trail, login_sessions
from app.accounts.repository import UserRepository
from app.accounts.schemas import SecurityEventPage, SecurityEventRead, SessionList, SessionRead
from app.accounts.session_management import SessionManagement
from app.container import Container
from app.web.openapi import BEARER, problems


def provide_session_management(
    db_session: NamedDependency[AsyncSession], container: NamedDependency[Container], request: Request[Any, Any, Any]
) -> SessionManagement:
    return SessionManagement(
        db=db_session,
        users=UserRepository(session=db_session),
        sessions=login_sessions(db_session, container),
        events=container.events,
        audit=audit_trail(db_session, container, request),
    )


class MySessionsController(Controller):
    path = "/api/v1/users/me/sessions"
    tags = ["users"]
    security = [BEARER]
    dependencies = {"session_management": Provide(provide_session_management, sync_to_thread=False)}

    @get(summary="The caller's live sessions, newest first", responses=problems(401, 503))
    async def list_my_sessions(
        self, request: AuthedRequest, session_management: NamedDependency[SessionManagement]
    ) -> SessionList:
        current = request.auth.session_id
        views = await session_management.list_of(request.user.id)
        return SessionList(items=[SessionRead.of(view, current=view.id == current) for view in views])

    @delete(
        "/{session_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="End one of the caller's sessions (its tokens stop working)",
        responses=problems(401, 404, 503),
    )
    async def end_my_session(
        self, request: AuthedRequest, session_id: FromPath[UUID], session_management: NamedDependency[SessionManagement]
    ) -> None:
        await session_management.end_one(request.user.id, session_id)

    @delete(
        status_code=HTTP_204_NO_CONTENT,
        summary="End every session of the caller but this one",
        responses=problems(401, 503),
    )
    async def end_my_other_sessions(
        self, request: AuthedRequest, session_management: NamedDependency[SessionManagement]
    ) -> None:
        await session_management.end_others(request.user.id, request.auth.session_id)


def event_page(page: EventPage, *, limit: int, offset: int) -> SecurityEventPage:
    return SecurityEventPage(
        items=[
            SecurityEventRead(
                id=row.id,
                type=row.type,
                at=row.at,
                ip=row.ip,
                user_agent=row.user_agent,
                request_id=row.request_id,
                detail=row.detail,
            )
            for row in page.items
        ],
        total=page.total,
        limit=limit,
        offset=offset,
    )


class MyEventsController(Controller):
    path = "/api/v1/users/me/events"
    tags = ["users"]
    security = [BEARER]
    dependencies = {"session_management": Provide(provide_session_management, sync_to_thread=False)}

    @get(summary="The caller's security events, newest first", responses=problems(401, 422, 503))
    async def list_my_events(
        self,
        request: AuthedRequest,
        session_management: NamedDependency[SessionManagement],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
    ) -> SecurityEventPage:
        page = await session_management.events_of(request.user.id, limit=limit, offset=offset)
        return event_page(page, limit=limit, offset=offset)
