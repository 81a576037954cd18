"""Certificate Signing Requests: /api/v2/csrs."""

from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tessera.api.deps import UnitOfWork, issuance, now, require
from tessera.api.routing import PrefixRouter
from tessera.api.v2 import views
from tessera.api.v2.envelope import bulk_answer, download, ok, page_meta
from tessera.api.v2.params import Page, PerPage20, RowId
from tessera.api.v2.schemas import (
    AttachCSRKey,
    BulkSignCSRs,
    IdList,
    SignCSR,
    UploadCSR,
)
from tessera.api.v2.uploads import PASSWORD, PRIVATE_KEY, read_upload, text, upload_body
from tessera.domains.actor import Actor
from tessera.domains.bulk import BulkResult
from tessera.domains.csrs.service import CSRService, SignOptions
from tessera.storage import models

router = PrefixRouter(prefix="/csrs", tags=["Certificate Signing Requests"])
Reader = Annotated[Actor, Depends(require("read:csrs"))]
WRITE_CSRS = require("write:csrs")
Writer = Annotated[Actor, Depends(WRITE_CSRS)]
Deleter = Annotated[Actor, Depends(require("delete:csrs"))]
# Signing issues a certificate, so it also needs the right to issue one (checked second, so a
# caller without write:csrs hears about that first; the same dependency runs once).
ISSUES_CERTIFICATES = [Depends(WRITE_CSRS), Depends(require("write:certificates"))]


def _service(request: Request, session: UnitOfWork, actor: Actor) -> CSRService:
    return CSRService(issuance(request, session, actor), now(request))


def _uploaded(row: models.CertificateRequestRow, message: str) -> JSONResponse:
    return ok(views.csr_view(row), message, status=201)


def _bulk(result: BulkResult, verb: str) -> JSONResponse:
    return bulk_answer(result, f"{len(result.success)} CSRs {verb}")


@router.get("")
def list_csrs(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    status: str | None = None,
    page: Page = 1,
    per_page: PerPage20 = 20,
) -> JSONResponse:
    rows, total = _service(request, session, actor).listing(status or None, page, per_page)
    return ok([views.csr_view(r) for r in rows], meta=page_meta(page, per_page, total))


@router.post("", status_code=201)
def upload_csr(
    request: Request, body: UploadCSR, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    key = body.private_key.encode() if body.private_key and body.private_key.strip() else None
    service = _service(request, session, actor)
    row = service.upload(body.csr.encode(), body.name, "json", key, body.password)
    return _uploaded(row, "CSR uploaded successfully")


CSR = "a certificate signing request: PEM (or DER, as a file)"
CSR_NAME = text("what the CSR is listed as (empty: its subject's CN or first SAN)", 200)
CSR_KEY = {"private_key": PRIVATE_KEY, "password": PASSWORD}  # also a key inside the file
CSR_FORM = {"name": CSR_NAME, **CSR_KEY}
UPLOAD_FIELDS = ("pem",)
IMPORT_FIELDS = ("pem_content", "csr", "pem")


@router.post(
    "/upload",
    status_code=201,
    openapi_extra=upload_body(CSR, UPLOAD_FIELDS, **CSR_FORM),
)
async def upload_pem(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    """The seed's "Upload CSR (Multipart)": a `file` part (and `name`), or JSON `pem`."""
    upload = await read_upload(request, UPLOAD_FIELDS, CSR_FORM)
    row = await run_in_threadpool(
        _service(request, session, actor).upload,
        upload.content,
        upload.text("name"),
        "upload",
        upload.private_key,
        upload.text("password"),
    )
    return _uploaded(row, "CSR uploaded successfully")


@router.post(
    "/import",
    status_code=201,
    openapi_extra=upload_body(CSR, IMPORT_FIELDS, **CSR_FORM),
)
async def import_csr(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    upload = await read_upload(request, IMPORT_FIELDS, CSR_FORM)
    row = await run_in_threadpool(
        _service(request, session, actor).upload,
        upload.content,
        upload.text("name"),
        "import",
        upload.private_key,
        upload.text("password"),
    )
    return _uploaded(row, f'CSR "{row.name}" imported successfully')


@router.get("/history")
def history(
    request: Request, session: UnitOfWork, actor: Reader, page: Page = 1, per_page: PerPage20 = 20
) -> JSONResponse:
    rows, total = _service(request, session, actor).history(page, per_page)
    return ok([views.csr_view(r) for r in rows], meta=page_meta(page, per_page, total))


@router.post("/bulk/sign", dependencies=ISSUES_CERTIFICATES)
def bulk_sign(
    request: Request, body: BulkSignCSRs, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    options = SignOptions(body.ca_id, body.template_id, body.validity_days)
    return _bulk(_service(request, session, actor).bulk_sign(body.ids, options), "signed")


@router.post("/bulk/delete")
def bulk_delete(
    request: Request, body: IdList, session: UnitOfWork, actor: Deleter
) -> JSONResponse:
    return _bulk(_service(request, session, actor).bulk_delete(body.ids), "deleted")


@router.get("/{csr_id}")
def get_csr(request: Request, csr_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    service = _service(request, session, actor)
    row = service.get(csr_id)
    return ok(views.csr_details(row, service.decoded(row)))


@router.delete("/{csr_id}", status_code=204)
def delete_csr(request: Request, csr_id: RowId, session: UnitOfWork, actor: Deleter) -> Response:
    _service(request, session, actor).delete(csr_id)
    return Response(status_code=204)


@router.post("/{csr_id}/sign", status_code=201, dependencies=ISSUES_CERTIFICATES)
def sign_csr(
    request: Request, csr_id: RowId, body: SignCSR, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    options = SignOptions(body.ca_id, body.template_id, body.validity_days)
    _, cert = _service(request, session, actor).sign(csr_id, options)
    return ok(views.certificate_view(cert, now(request)), "CSR signed successfully", status=201)


@router.get("/{csr_id}/export")
def export_csr(request: Request, csr_id: RowId, session: UnitOfWork, actor: Reader) -> Response:
    return download(_service(request, session, actor).export(csr_id))


@router.post("/{csr_id}/key")
def attach_key(
    request: Request, csr_id: RowId, body: AttachCSRKey, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    row = _service(request, session, actor).attach_key(csr_id, body.key, body.passphrase)
    return ok(views.csr_view(row), "Private key attached successfully")
