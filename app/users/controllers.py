"""/api/v1/users: the caller's own account, and user management for admins and moderators."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, patch, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from app.auth.dependencies import provide_auth_service, provide_user_administration, provide_users_service
from app.auth.guards import requires_role
from app.auth.principal import Principal
from app.auth.services import AuthService
from app.auth.tokens import AccessClaims
from app.db.models import Role
from app.openapi import BEARER, BODY, problems
from app.users.administration import UserAdministration
from app.users.schemas import PasswordChange, ProfileUpdate, UserAdminUpdate, UserPage, UserRead
from app.users.services import UserFilter, UserService

AuthedRequest = Request[Principal, AccessClaims, Any]
STAFF = {"roles": [Role.ADMIN, Role.MODERATOR]}
ADMINS = {"roles": [Role.ADMIN]}


class MeController(Controller):
    path = "/api/v1/users/me"
    tags = ["users"]
    security = [BEARER]
    dependencies = {
        "users_service": Provide(provide_users_service),
        "auth_service": Provide(provide_auth_service, sync_to_thread=False),
    }

    @get(summary="The caller's account", responses=problems(401, 503))
    async def read_me(self, request: AuthedRequest) -> UserRead:
        return UserRead.of(request.user)

    @patch(summary="Change the caller's email or full name", responses=problems(*BODY, 401, 409, 503))
    async def update_me(
        self, request: AuthedRequest, data: JSONBody[ProfileUpdate], users_service: NamedDependency[UserService]
    ) -> UserRead:
        user = await users_service.update_profile(
            await users_service.get_live(request.user.id),
            email=None if data.email is msgspec.UNSET else data.email,
            full_name=None if data.full_name is msgspec.UNSET else data.full_name,
            set_full_name=data.full_name is not msgspec.UNSET,
        )
        return UserRead.of(user)

    @put(
        "/password",
        status_code=HTTP_204_NO_CONTENT,
        summary="Change the caller's password",
        responses=problems(*BODY, 401, 503),
    )
    async def change_password(
        self, request: AuthedRequest, data: JSONBody[PasswordChange], auth_service: NamedDependency[AuthService]
    ) -> None:
        await auth_service.change_password(
            request.user.id, request.auth.session_id, data.current_password, data.new_password
        )


class UsersController(Controller):
    path = "/api/v1/users"
    tags = ["users"]
    guards = [requires_role]
    security = [BEARER]
    dependencies = {
        "users_service": Provide(provide_users_service),
        "user_administration": Provide(provide_user_administration, sync_to_thread=False),
    }

    @get(opt=STAFF, summary="List users (admin, moderator)", responses=problems(401, 403, 422, 503))
    async def list_users(
        self,
        users_service: NamedDependency[UserService],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
        role: Annotated[Role | None, QueryParameter()] = None,
        is_active: Annotated[bool | None, QueryParameter()] = None,
        q: Annotated[
            str | None,
            QueryParameter(
                min_length=1,
                max_length=100,
                pattern=r"^[^\x00-\x1f\x7f]*$",  # control characters cannot be in any name or address
                description="Substring of username or email",
            ),
        ] = None,
    ) -> UserPage:
        users, total = await users_service.search(
            UserFilter(limit=limit, offset=offset, role=role, is_active=is_active, query=q)
        )
        return UserPage(items=[UserRead.of(u) for u in users], total=total, limit=limit, offset=offset)

    @get("/{user_id:uuid}", opt=STAFF, summary="One user (admin, moderator)", responses=problems(401, 403, 404, 503))
    async def get_user(self, user_id: FromPath[UUID], users_service: NamedDependency[UserService]) -> UserRead:
        return UserRead.of(await users_service.get_live(user_id))

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
