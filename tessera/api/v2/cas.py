"""Certificate Authorities: /api/v2/cas."""

from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tessera.api.deps import UnitOfWork, issuance, now, require
from tessera.api.routing import PrefixRouter
from tessera.api.v2 import views
from tessera.api.v2.envelope import bulk_answer, download, ok, page_meta
from tessera.api.v2.params import Page, PerPage20, PerPage50, RowId
from tessera.api.v2.schemas import CreateCA, IdList, RevokeCA, UpdateCA
from tessera.api.v2.uploads import NAME, PASSWORD, PRIVATE_KEY, flag, read_upload, upload_body
from tessera.core.names import SubjectFields
from tessera.domains.actor import Actor
from tessera.domains.cas.service import CAService, NewCA
from tessera.domains.certificates.service import CertificateService
from tessera.storage.repositories.certificates import CertificateFilter

router = PrefixRouter(prefix="/cas", tags=["Certificate Authorities"])
Reader = Annotated[Actor, Depends(require("read:cas"))]
Writer = Annotated[Actor, Depends(require("write:cas"))]
Deleter = Annotated[Actor, Depends(require("delete:cas"))]


def _service(request: Request, session: UnitOfWork, actor: Actor) -> CAService:
    return CAService(issuance(request, session, actor), now(request))


@router.get("")
def list_cas(
    request: Request, session: UnitOfWork, actor: Reader, page: Page = 1, per_page: PerPage20 = 20
) -> JSONResponse:
    rows, total, counts = _service(request, session, actor).listing(page, per_page)
    data = [views.ca_view(r, counts.get(r.id, 0)) for r in rows]
    return ok(data, meta=page_meta(page, per_page, total))


@router.get("/tree")
def tree(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    rows, counts = _service(request, session, actor).tree()
    nodes = {r.id: {**views.ca_view(r, counts.get(r.id, 0)), "children": []} for r in rows}
    roots: list[dict[str, object]] = []
    for row in rows:
        parent = nodes.get(row.parent_id) if row.parent_id else None
        (parent["children"] if parent else roots).append(nodes[row.id])
    return ok(roots)


@router.post("", status_code=201)
def create_ca(request: Request, body: CreateCA, session: UnitOfWork, actor: Writer) -> JSONResponse:
    subject = SubjectFields(
        body.common_name,
        body.organization,
        body.organizational_unit,
        body.country,
        body.state,
        body.locality,
        body.email,
    )
    spec = NewCA(
        subject,
        body.ca_type,
        body.key_algorithm,
        body.key_size,
        body.validity_days,
        body.parent_id,
        body.name,
        body.path_length,
        body.template_id,
    )
    ca = _service(request, session, actor).create(spec)
    return ok(views.ca_view(ca, 0), "CA created successfully", status=201)  # a new CA has none


@router.get("/export")
def export_all(
    request: Request, session: UnitOfWork, actor: Reader, format: str = "pem"
) -> Response:
    return download(_service(request, session, actor).export_all(format))


IMPORT_FIELDS = ("certificate", "pem_content", "content")
IMPORT_FORM = {
    "password": PASSWORD,
    "name": NAME,
    "import_key": flag(True, "keep the private key that comes with the certificate"),
    "private_key": PRIVATE_KEY,
}
IMPORT_BODY = upload_body(
    "a CA certificate: PEM, DER or PKCS#12, with or without its key", IMPORT_FIELDS, **IMPORT_FORM
)


@router.post("/import", status_code=201, openapi_extra=IMPORT_BODY)
async def import_ca(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    upload = await read_upload(request, IMPORT_FIELDS, IMPORT_FORM)
    service = _service(request, session, actor)
    ca = await run_in_threadpool(
        service.import_ca,
        upload.content,
        upload.text("password"),
        upload.display_name(),
        upload.flag("import_key", True),
        upload.private_key,
    )
    # certificates imported before their CA are filed under it now
    count = service.certificate_count(ca.id)
    return ok(views.ca_view(ca, count), f'CA "{ca.name}" imported successfully', status=201)


@router.post("/bulk/delete")
def bulk_delete(
    request: Request, body: IdList, session: UnitOfWork, actor: Deleter
) -> JSONResponse:
    result = _service(request, session, actor).bulk_delete(body.ids)
    return bulk_answer(result, f"{len(result.success)} CAs deleted")


@router.post("/bulk/export")
def bulk_export(request: Request, body: IdList, session: UnitOfWork, actor: Reader) -> Response:
    return download(_service(request, session, actor).export_many(body.ids))


@router.get("/{ca_id}")
def get_ca(request: Request, ca_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    service = _service(request, session, actor)
    ca = service.get(ca_id)
    count = service.certificate_count(ca.id)
    return ok(views.ca_details(ca, count, now(request)))


@router.patch("/{ca_id}")
def update_ca(
    request: Request, ca_id: RowId, body: UpdateCA, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    service = _service(request, session, actor)
    ca = service.update(ca_id, body.name, body.is_active)
    return ok(views.ca_view(ca, service.certificate_count(ca.id)), "CA updated successfully")


@router.delete("/{ca_id}", status_code=204)
def delete_ca(request: Request, ca_id: RowId, session: UnitOfWork, actor: Deleter) -> Response:
    _service(request, session, actor).delete(ca_id)
    return Response(status_code=204)


@router.post("/{ca_id}/revoke")
def revoke_ca(
    request: Request, ca_id: RowId, body: RevokeCA, session: UnitOfWork, actor: Deleter
) -> JSONResponse:
    """Not in the seed: a subordinate CA's certificate revoked by its issuer held here."""
    service = _service(request, session, actor)
    ca = service.revoke(ca_id, body.reason)
    return ok(views.ca_view(ca, service.certificate_count(ca.id)), "CA revoked")


@router.get("/{ca_id}/certificates")
def ca_certificates(
    request: Request,
    ca_id: RowId,
    session: UnitOfWork,
    actor: Reader,
    status: str | None = None,
    page: Page = 1,
    per_page: PerPage50 = 50,
) -> JSONResponse:
    moment = now(request)
    service = CertificateService(issuance(request, session, actor), moment)
    _service(request, session, actor).get(ca_id)
    rows, total = service.search(CertificateFilter(status=status, ca_id=ca_id), page, per_page)
    data = [views.certificate_view(r, moment) for r in rows]
    return ok(data, meta=page_meta(page, per_page, total))


@router.get("/{ca_id}/export")
def export_ca(
    request: Request, ca_id: RowId, session: UnitOfWork, actor: Reader, format: str = "pem"
) -> Response:
    return download(_service(request, session, actor).export(ca_id, format))
