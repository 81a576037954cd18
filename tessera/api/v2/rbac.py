"""Roles and permissions: /api/v2/rbac. A user's effective permissions are their role's
plus those of every group they belong to."""

from typing import Annotated

from fastapi import Depends
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, repositories, require
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import ok
from tessera.api.v2.params import RowId
from tessera.core.errors import NotFound
from tessera.domains.actor import Actor
from tessera.domains.identity import effective, permissions

router = PrefixRouter(prefix="/rbac", tags=["Roles & Permissions (RBAC)"])
Reader = Annotated[Actor, Depends(require("read:users"))]


@router.get("/roles")
def roles(actor: Reader) -> JSONResponse:
    return ok({"roles": list(permissions.ROLES), "role_permissions": permissions.ROLE_PERMISSIONS})


@router.get("/roles/{role}")
def role(role: str, actor: Reader) -> JSONResponse:
    if role not in permissions.ROLE_PERMISSIONS:
        raise NotFound(f"role {role!r} not found")
    return ok(
        {
            "role": role,
            "description": permissions.ROLE_DESCRIPTIONS[role],
            "permissions": permissions.ROLE_PERMISSIONS[role],
        }
    )


@router.get("/permissions")
def all_permissions(actor: Reader) -> JSONResponse:
    data = [{"name": k, "description": v} for k, v in permissions.PERMISSIONS.items()]
    return ok(data)


@router.get("/users/{user_id}/permissions")
def user_permissions(user_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    """Beyond the seed: what a user may do and why (role plus groups)."""
    repos = repositories(session, actor)
    user = repos.users.get(user_id)  # scoped: another organization's user is 404
    if user is None:
        raise NotFound(f"user {user_id} not found")
    groups = repos.groups.of_user(user.id)
    data = {
        "user_id": user.id,
        "username": user.username,
        "role": user.role,
        "role_permissions": permissions.ROLE_PERMISSIONS.get(user.role, []),
        "groups": [
            {"id": g.id, "name": g.name, "permissions": list(g.permissions or [])} for g in groups
        ],
        "effective_permissions": sorted(effective.user_permissions(session, user)),
    }
    return ok(data)
