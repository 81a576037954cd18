"""User groups: /api/v2/groups. Members hold the group's permissions on top of their role."""

from typing import Annotated

from fastapi import Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from tessera.api.deps import UnitOfWork, now, repositories, require
from tessera.api.routing import PrefixRouter
from tessera.api.v2.account_schemas import AddMember, GroupBody, UpdateGroup
from tessera.api.v2.account_views import group_view, member_view
from tessera.api.v2.envelope import ok
from tessera.api.v2.params import RowId
from tessera.domains.actor import Actor
from tessera.domains.identity.groups import GroupFields, GroupService

router = PrefixRouter(prefix="/groups", tags=["User Groups"])
Reader = Annotated[Actor, Depends(require("read:users"))]
Writer = Annotated[Actor, Depends(require("write:users"))]
Deleter = Annotated[Actor, Depends(require("delete:users"))]


def _service(request: Request, session: Session, actor: Actor) -> GroupService:
    return GroupService(repositories(session, actor), actor, now(request))


@router.get("")
def list_groups(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    search: Annotated[str | None, Query(max_length=200)] = None,
) -> JSONResponse:
    groups = _service(request, session, actor)
    counts = groups.member_counts()
    return ok([group_view(g, counts.get(g.id, 0)) for g in groups.search(search)])


@router.get("/stats")
def group_stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).stats())


@router.post("", status_code=201)
def create_group(
    request: Request, body: GroupBody, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    fields = GroupFields(body.name, body.description, body.permissions)
    group = _service(request, session, actor).create(fields)
    return ok(group_view(group, 0), "Group created", status=201)


@router.get("/{group_id}")
def get_group(
    request: Request, group_id: RowId, session: UnitOfWork, actor: Reader
) -> JSONResponse:
    groups = _service(request, session, actor)
    group = groups.get(group_id)
    members = [member_view(m, u) for m, u in groups.members(group.id)]
    return ok({**group_view(group, len(members)), "members": members})


@router.put("/{group_id}")
def update_group(
    request: Request, group_id: RowId, body: UpdateGroup, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    groups = _service(request, session, actor)
    group = groups.update(group_id, GroupFields(body.name, body.description, body.permissions))
    return ok(group_view(group, groups.member_counts().get(group.id, 0)), "Group updated")


@router.delete("/{group_id}", status_code=204)
def delete_group(
    request: Request, group_id: RowId, session: UnitOfWork, actor: Deleter
) -> Response:
    _service(request, session, actor).delete(group_id)
    return Response(status_code=204)


@router.get("/{group_id}/members")
def list_members(
    request: Request, group_id: RowId, session: UnitOfWork, actor: Reader
) -> JSONResponse:
    members = _service(request, session, actor).members(group_id)
    return ok([member_view(m, u) for m, u in members])


@router.post("/{group_id}/members", status_code=201)
def add_member(
    request: Request, group_id: RowId, body: AddMember, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    member, user = _service(request, session, actor).add_member(group_id, body.user_id, body.role)
    return ok(member_view(member, user), "Member added", status=201)


@router.delete("/{group_id}/members/{user_id}", status_code=204)
def remove_member(
    request: Request, group_id: RowId, user_id: RowId, session: UnitOfWork, actor: Writer
) -> Response:
    _service(request, session, actor).remove_member(group_id, user_id)
    return Response(status_code=204)
