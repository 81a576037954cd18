"""Templates, read side: /api/v2/templates (CRUD, import and export arrive with the inventory)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, repositories, require
from tessera.api.v2.envelope import iso, ok
from tessera.api.v2.params import RowId
from tessera.core.errors import NotFound
from tessera.domains.actor import Actor
from tessera.storage import models

router = APIRouter(prefix="/templates", tags=["Templates"])
Reader = Annotated[Actor, Depends(require("read:templates"))]


def template_view(row: models.Template) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "template_type": row.template_type,
        "validity_days": row.validity_days,
        "key_type": row.key_algorithm,
        "key_size": row.key_size,
        "key_usage": row.key_usage,
        "extended_key_usage": row.extended_key_usage,
        "is_ca": row.is_ca,
        "path_length": row.path_length,
        "subject_defaults": row.subject_defaults,
        "created_at": iso(row.created_at),
    }


@router.get("")
def list_templates(session: UnitOfWork, actor: Reader) -> JSONResponse:
    rows = repositories(session, actor).templates.all()
    return ok([template_view(r) for r in rows])


@router.get("/{template_id}")
def get_template(template_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    row = repositories(session, actor).templates.get(template_id)
    if row is None:
        raise NotFound(f"template {template_id} not found")
    return ok(template_view(row))
