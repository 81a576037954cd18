"""Templates: /api/v2/templates (CRUD, bulk delete, export and import)."""

from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tessera.api.deps import UnitOfWork, repositories, require
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import bulk_answer, download, iso, ok
from tessera.api.v2.params import RowId
from tessera.api.v2.schemas import CreateTemplate, IdList, TemplateBody
from tessera.api.v2.uploads import flag, read_upload, upload_body
from tessera.domains.actor import Actor
from tessera.domains.templates.service import TemplateService, document
from tessera.storage import models

router = PrefixRouter(prefix="/templates", tags=["Templates"])
Reader = Annotated[Actor, Depends(require("read:templates"))]
Writer = Annotated[Actor, Depends(require("write:templates"))]
Deleter = Annotated[Actor, Depends(require("delete:templates"))]


def _service(session: UnitOfWork, actor: Actor) -> TemplateService:
    return TemplateService(repositories(session, actor), actor)


def template_view(row: models.Template) -> dict[str, Any]:
    """The exported document, plus identity and the flat fields earlier clients read."""
    return {
        "id": row.id,
        **document(row),
        "is_ca": row.is_ca,
        "path_length": row.path_length,
        "created_at": iso(row.created_at),
    }


@router.get("")
def list_templates(session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok([template_view(r) for r in _service(session, actor).all()])


@router.post("", status_code=201)
def create_template(body: CreateTemplate, session: UnitOfWork, actor: Writer) -> JSONResponse:
    row = _service(session, actor).create(body.model_dump(exclude_unset=True))
    return ok(template_view(row), "Template created successfully", status=201)


@router.get("/export")
def export_all(session: UnitOfWork, actor: Reader) -> Response:
    return download(_service(session, actor).export_all())


IMPORT_FIELDS = ("json_content",)
IMPORT_FORM = {"update_existing": flag(False, "overwrite the templates of the same name")}
IMPORT_BODY = upload_body(
    "templates: JSON, as the template export writes it (one, an array, or {templates: [...]})",
    IMPORT_FIELDS,
    **IMPORT_FORM,
)


@router.post("/import", openapi_extra=IMPORT_BODY)
async def import_templates(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    upload = await read_upload(request, IMPORT_FIELDS, IMPORT_FORM)
    report = await run_in_threadpool(
        _service(session, actor).import_documents,
        upload.content,
        upload.flag("update_existing", False),
    )
    message = f"{report.imported} imported, {report.updated} updated, {report.skipped} skipped"
    return ok(report.as_dict(), message)


@router.post("/bulk/delete")
def bulk_delete(body: IdList, session: UnitOfWork, actor: Deleter) -> JSONResponse:
    result = _service(session, actor).bulk_delete(body.ids)
    return bulk_answer(result, f"{len(result.success)} templates deleted")


@router.get("/{template_id}")
def get_template(template_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(template_view(_service(session, actor).get(template_id)))


@router.put("/{template_id}")
def update_template(
    template_id: RowId, body: TemplateBody, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    row = _service(session, actor).update(template_id, body.model_dump(exclude_unset=True))
    return ok(template_view(row), "Template updated successfully")


@router.delete("/{template_id}", status_code=204)
def delete_template(template_id: RowId, session: UnitOfWork, actor: Deleter) -> Response:
    _service(session, actor).delete(template_id)
    return Response(status_code=204)


@router.get("/{template_id}/export")
def export_template(template_id: RowId, session: UnitOfWork, actor: Reader) -> Response:
    return download(_service(session, actor).export(template_id))
