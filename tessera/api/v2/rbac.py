"""Roles and permissions: /api/v2/rbac."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from tessera.api.deps import require
from tessera.api.v2.envelope import ok
from tessera.core.errors import NotFound
from tessera.domains.actor import Actor
from tessera.domains.identity import permissions

router = APIRouter(prefix="/rbac", tags=["Roles & Permissions (RBAC)"])
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
