"""The caller's own API keys: /api/v2/account/apikeys."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tessera.api.deps import CurrentActor, UnitOfWork, now, repositories
from tessera.api.v2 import views
from tessera.api.v2.envelope import ok
from tessera.api.v2.params import RowId
from tessera.api.v2.schemas import CreateApiKey, UpdateApiKey
from tessera.domains.actor import Actor
from tessera.domains.identity.service import ApiKeyService

router = APIRouter(prefix="/account", tags=["Account Management"])


def _service(request: Request, session: UnitOfWork, actor: Actor) -> ApiKeyService:
    return ApiKeyService(repositories(session, actor), actor, now(request))


@router.get("/apikeys")
def list_keys(request: Request, session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    return ok([views.api_key_view(k) for k in _service(request, session, actor).mine()])


@router.post("/apikeys", status_code=201)
def create_key(
    request: Request, body: CreateApiKey, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    key, secret = _service(request, session, actor).create(
        body.name, body.expires_days, body.permissions
    )
    data = {**views.api_key_view(key), "key": secret}
    return ok(data, "API key created; it is shown only once", status=201)


@router.get("/apikeys/{key_id}")
def get_key(
    request: Request, key_id: RowId, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    return ok(views.api_key_view(_service(request, session, actor).get(key_id)))


@router.patch("/apikeys/{key_id}")
def update_key(
    request: Request, key_id: RowId, body: UpdateApiKey, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    key = _service(request, session, actor).update(key_id, body.name, body.enabled)
    return ok(views.api_key_view(key), "API key updated")


@router.post("/apikeys/{key_id}/regenerate")
def regenerate_key(
    request: Request, key_id: RowId, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    key, secret = _service(request, session, actor).regenerate(key_id)
    return ok({**views.api_key_view(key), "key": secret}, "API key regenerated")


@router.delete("/apikeys/{key_id}", status_code=204)
def delete_key(
    request: Request, key_id: RowId, session: UnitOfWork, actor: CurrentActor
) -> Response:
    _service(request, session, actor).delete(key_id)
    return Response(status_code=204)
