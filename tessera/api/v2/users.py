"""Users: /api/v2/users (the full identity system is a later issue)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, repositories, require
from tessera.api.v2 import views
from tessera.api.v2.envelope import ok
from tessera.api.v2.params import RowId
from tessera.api.v2.schemas import CreateUser, UpdateUser
from tessera.domains.actor import Actor
from tessera.domains.identity.service import UserFields, UserService

router = APIRouter(prefix="/users", tags=["Users"])
Reader = Annotated[Actor, Depends(require("read:users"))]
Writer = Annotated[Actor, Depends(require("write:users"))]
Deleter = Annotated[Actor, Depends(require("delete:users"))]


def _service(session: UnitOfWork, actor: Actor) -> UserService:
    return UserService(repositories(session, actor), actor)


@router.get("")
def list_users(session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok([views.user_view(u) for u in _service(session, actor).all()])


@router.post("", status_code=201)
def create_user(body: CreateUser, session: UnitOfWork, actor: Writer) -> JSONResponse:
    fields = UserFields(body.username, body.email, body.password, body.role, body.full_name)
    user = _service(session, actor).create(fields)
    return ok(views.user_view(user), "User created successfully", status=201)


@router.get("/{user_id}")
def get_user(user_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(views.user_view(_service(session, actor).get(user_id)))


@router.put("/{user_id}")
def update_user(
    user_id: RowId, body: UpdateUser, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    fields = UserFields(
        email=body.email,
        password=body.password,
        role=body.role,
        full_name=body.full_name,
        active=body.active,
    )
    user = _service(session, actor).update(user_id, fields)
    return ok(views.user_view(user), "User updated successfully")


@router.delete("/{user_id}", status_code=204)
def delete_user(user_id: RowId, session: UnitOfWork, actor: Deleter) -> Response:
    _service(session, actor).delete(user_id)
    return Response(status_code=204)
