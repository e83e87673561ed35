"""/api/v1/users: user management for admins and moderators."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, patch
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from app.accounts.activity_controllers import event_page, provide_session_management
from app.accounts.authentication import AuthedRequest, requires_role
from app.accounts.repository import UserFilter
from app.accounts.schemas import AdminSessionList, AdminSessionRead, SecurityEventPage, UserRead
from app.accounts.session_management import SessionManagement
from app.admin.dependencies import provide_user_administration
from app.admin.schemas import UserAdminUpdate, UserPage
from app.admin.services import UserAdministration
from app.db.models import Role
from app.web.openapi import BEARER, BODY, problems

STAFF = {"roles": [Role.ADMIN, Role.MODERATOR]}
ADMINS = {"roles": [Role.ADMIN]}


class UsersController(Controller):
    path = "/api/v1/users"
    tags = ["users"]
    guards = [requires_role]
    security = [BEARER]
    dependencies = {"user_administration": Provide(provide_user_administration, sync_to_thread=False)}

    @get(opt=STAFF, summary="List users (admin, moderator)", responses=problems(401, 403, 422, 503))
    async def list_users(
        self,
        user_administration: NamedDependency[UserAdministration],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
        role: Annotated[Role | None, QueryParameter()] = None,
        is_active: Annotated[bool | None, QueryParameter()] = None,
        q: Annotated[
            str | None,
            QueryParameter(
                min_length=1,
                max_length=100,
                # Control characters cannot be in any name or address. "(?!\n)": in Python's
                # re (which checks it here) "$" also matches before a final newline.
                pattern=r"^[^\x00-\x1f\x7f]*$(?!\n)",
                description="Substring of username or email",
            ),
        ] = None,
    ) -> UserPage:
        users, total = await user_administration.search(
            UserFilter(limit=limit, offset=offset, role=role, is_active=is_active, query=q)
        )
        return UserPage(items=[UserRead.of(u) for u in users], total=total, limit=limit, offset=offset)

    @get("/{user_id:uuid}", opt=STAFF, summary="One user (admin, moderator)", responses=problems(401, 403, 404, 503))
    async def get_user(
        self, user_id: FromPath[UUID], user_administration: NamedDependency[UserAdministration]
    ) -> UserRead:
        return UserRead.of(await user_administration.get(user_id))

    @patch(
        "/{user_id:uuid}",
        opt=STAFF,
        summary="Change role (admin) or activation (admin; moderator for plain users)",
        responses=problems(*BODY, 401, 403, 404, 503),
    )
    async def administer_user(
        self,
        request: AuthedRequest,
        user_id: FromPath[UUID],
        data: JSONBody[UserAdminUpdate],
        user_administration: NamedDependency[UserAdministration],
    ) -> UserRead:
        user = await user_administration.change(
            request.user,
            user_id,
            role=None if data.role is msgspec.UNSET else data.role,
            is_active=None if data.is_active is msgspec.UNSET else data.is_active,
        )
        return UserRead.of(user)

    @delete(
        "/{user_id:uuid}",
        opt=ADMINS,
        status_code=HTTP_204_NO_CONTENT,
        summary="Soft-delete a user (admin)",
        responses=problems(401, 403, 404, 503),
    )
    async def delete_user(
        self,
        request: AuthedRequest,
        user_id: FromPath[UUID],
        user_administration: NamedDependency[UserAdministration],
    ) -> None:
        await user_administration.delete(request.user, user_id)

    @get(
        "/{user_id:uuid}/sessions",
        opt=ADMINS,
        summary="A user's live sessions (admin)",
        responses=problems(401, 403, 404, 503),
        dependencies={"session_management": Provide(provide_session_management, sync_to_thread=False)},
    )
    async def list_user_sessions(
        self, user_id: FromPath[UUID], session_management: NamedDependency[SessionManagement]
    ) -> AdminSessionList:
        views = await session_management.list_of(user_id)
        return AdminSessionList(items=[AdminSessionRead.of(view) for view in views])

    @delete(
        "/{user_id:uuid}/sessions",
        opt=ADMINS,
        status_code=HTTP_204_NO_CONTENT,
        summary="End every session of a user (admin)",
        responses=problems(401, 403, 404, 503),
        dependencies={"session_management": Provide(provide_session_management, sync_to_thread=False)},
    )
    async def end_user_sessions(
        self, request: AuthedRequest, user_id: FromPath[UUID], session_management: NamedDependency[SessionManagement]
    ) -> None:
        await session_management.end_all(request.user.id, user_id)

    @delete(
        "/{user_id:uuid}/mfa/totp",
        opt=ADMINS,
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a user's second factor (admin): for an owner who lost the authenticator and the "
        "recovery codes; the owner is mailed",
        responses=problems(400, 401, 403, 404, 503),
    )
    async def remove_user_second_factor(
        self, request: AuthedRequest, user_id: FromPath[UUID], user_administration: NamedDependency[UserAdministration]
    ) -> None:
        await user_administration.remove_second_factor(request.user, user_id)

    @get(
        "/{user_id:uuid}/events",
        opt=ADMINS,
        summary="A user's security events, newest first (admin)",
        responses=problems(401, 403, 404, 422, 503),
        dependencies={"session_management": Provide(provide_session_management, sync_to_thread=False)},
    )
    async def list_user_events(
        self,
        user_id: FromPath[UUID],
        session_management: NamedDependency[SessionManagement],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
    ) -> SecurityEventPage:
        page = await session_management.events_of(user_id, limit=limit, offset=offset)
        return event_page(page, limit=limit, offset=offset)
