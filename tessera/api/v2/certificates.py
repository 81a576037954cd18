"""Certificates: /api/v2/certificates."""

from typing import Annotated

from fastapi import Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tessera.api.deps import UnitOfWork, commit_before_answering, issuance, now, require
from tessera.api.routing import PrefixRouter, answers_head
from tessera.api.v2 import views
from tessera.api.v2.envelope import bulk_answer, download, ok, page_meta
from tessera.api.v2.params import MAX_ROW_ID, Page, PerPage50, QueryRowId, RowId
from tessera.api.v2.schemas import (
    BulkExport,
    BulkRenew,
    BulkRevoke,
    IdList,
    IssueCertificate,
    KeyRequest,
    Renew,
    Revoke,
)
from tessera.api.v2.uploads import (
    NAME,
    PASSWORD,
    PRIVATE_KEY,
    Upload,
    flag,
    read_upload,
    row_id,
    upload_body,
)
from tessera.core.errors import InvalidInput
from tessera.core.names import SubjectFields
from tessera.domains.actor import Actor
from tessera.domains.bulk import BulkResult
from tessera.domains.certificates.service import (
    CertificateService,
    ImportOptions,
    NewCertificate,
)
from tessera.domains.identity.permissions import grants
from tessera.storage import models
from tessera.storage.repositories.certificates import CertificateFilter

router = PrefixRouter(prefix="/certificates", tags=["Certificates"])
Reader = Annotated[Actor, Depends(require("read:certificates"))]
WRITER = require("write:certificates")
Writer = Annotated[Actor, Depends(WRITER)]
Deleter = Annotated[Actor, Depends(require("delete:certificates"))]
KEY_EXPORT_PERMISSION = "write:certificates"
ISSUE_STATUS = 201  # issue_lane.py answers the same route ahead of FastAPI


def _service(request: Request, session: UnitOfWork, actor: Actor) -> CertificateService:
    return CertificateService(issuance(request, session, actor), now(request))


@router.get("")
def list_certificates(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    status: str | None = None,
    ca_id: QueryRowId = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    page: Page = 1,
    per_page: PerPage50 = 50,
) -> JSONResponse:
    service = _service(request, session, actor)
    filters = CertificateFilter(status=status or None, ca_id=ca_id, search=search or None)
    rows, total = service.search(filters, page, per_page)
    moment = now(request)
    data = [views.certificate_view(r, moment) for r in rows]
    return ok(data, meta=page_meta(page, per_page, total))


@router.post("", status_code=ISSUE_STATUS)
def issue_certificate(
    request: Request, body: IssueCertificate, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    cert = issue_uncommitted(request, body, session, actor)
    commit_before_answering(session)
    return issued_answer(request, cert)


def issue_uncommitted(
    request: Request, body: IssueCertificate, session: Session, actor: Actor
) -> models.Certificate:
    """The issuance itself, its rows written but not committed (issue_lane.py commits the
    issuances of a batch together)."""
    subject = None
    if body.common_name:
        subject = SubjectFields(
            body.common_name,
            body.organization,
            body.organizational_unit,
            body.country,
            body.state,
            body.locality,
            body.email,
        )
    spec = NewCertificate(
        ca_id=body.ca_id,
        subject=subject,
        san=body.san,
        template_id=body.template_id,
        validity_days=body.validity_days,
        key_algorithm=body.key_algorithm,
        key_size=body.key_size,
        key_usage=body.key_usage,
        extended_key_usage=body.extended_key_usage,
        csr_pem=body.csr,
    )
    return _service(request, session, actor).issue(spec)


def issued_answer(request: Request, cert: models.Certificate) -> JSONResponse:
    return ok(
        views.certificate_view(cert, now(request)),
        "Certificate issued successfully",
        status=ISSUE_STATUS,
    )


@router.get("/stats")
def stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).stats())


@router.get("/export")
def export_all(
    request: Request, session: UnitOfWork, actor: Reader, format: str = "pem"
) -> Response:
    """Every certificate as one file: a PEM bundle, or PKCS#7 (pkcs7 PEM, pkcs7-der DER)."""
    return download(_service(request, session, actor).export_all(format))


IMPORT_FIELDS = ("certificate", "pem_content", "content", "pem")
IMPORT_FORM = {
    "password": PASSWORD,
    "name": NAME,
    "ca_id": row_id("the issuing CA (found by AKI/SKI when not given)"),
    "import_key": flag(True, "keep the private key that comes with the certificate"),
    "private_key": PRIVATE_KEY,
}
IMPORT_BODY = upload_body(
    "a certificate: PEM, DER, PKCS#12 or PKCS#7 (base64 of a binary file in JSON)",
    IMPORT_FIELDS,
    **IMPORT_FORM,
)


@router.post("/import", status_code=201, openapi_extra=IMPORT_BODY)
async def import_certificate(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    """JSON {certificate, private_key?, password?, name?, ca_id?, import_key?} or multipart
    (file, private_key, name, password, ca_id, import_key): PEM, DER, PKCS#12 or PKCS#7."""
    upload = await read_upload(request, IMPORT_FIELDS, IMPORT_FORM)
    options = ImportOptions(upload.display_name(), _ca_id(upload), upload.flag("import_key", True))
    service = _service(request, session, actor)
    password = upload.text("password")
    imported = await run_in_threadpool(
        service.import_certificate, upload.content, password, options, upload.private_key
    )
    if imported.ca is not None:
        message = f'CA certificate "{imported.ca.name}" imported successfully (detected as CA)'
        return ok(views.ca_view(imported.ca, imported.ca_certificates), message, status=201)
    cert = imported.certificate
    assert cert is not None
    name = options.name or cert.common_name or cert.subject
    data = {**views.certificate_view(cert, now(request)), "descr": name}
    return ok(data, f'Certificate "{name}" imported successfully', status=201)


def _ca_id(upload: Upload) -> int | None:
    text = (upload.number_text("ca_id") or "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_ROW_ID:
        raise InvalidInput("ca_id must be a positive integer")
    return int(text)


@router.post("/bulk/revoke")
def bulk_revoke(
    request: Request, body: BulkRevoke, session: UnitOfWork, actor: Deleter
) -> JSONResponse:
    result = _service(request, session, actor).bulk_revoke(body.ids, body.reason)
    return _bulk(result, "revoked")


@router.post("/bulk/renew")
def bulk_renew(
    request: Request, body: BulkRenew, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    result = _service(request, session, actor).bulk_renew(body.ids, body.ca_id)
    return _bulk(result, "renewed")


@router.post("/bulk/delete")
def bulk_delete(
    request: Request, body: IdList, session: UnitOfWork, actor: Deleter
) -> JSONResponse:
    return _bulk(_service(request, session, actor).bulk_delete(body.ids), "deleted")


@router.post("/bulk/export")
def bulk_export(request: Request, body: BulkExport, session: UnitOfWork, actor: Reader) -> Response:
    return download(_service(request, session, actor).export_many(body.ids, body.format))


def _bulk(result: BulkResult, verb: str) -> JSONResponse:
    message = f"{len(result.success)} certificates {verb}, {len(result.failed)} failed"
    if verb == "renewed":
        return bulk_answer(result, message, renewed=result.renewed)
    return bulk_answer(result, message)


@router.get("/{cert_id}")
def get_certificate(
    request: Request, cert_id: RowId, session: UnitOfWork, actor: Reader
) -> JSONResponse:
    cert = _service(request, session, actor).get(cert_id)
    return ok(views.certificate_details(cert, now(request)))


@router.get("/{cert_id}/export")
def export_certificate(
    request: Request,
    cert_id: RowId,
    session: UnitOfWork,
    actor: Reader,
    format: str = "pem",
    include_key: bool = False,
    password: str | None = None,
) -> Response:
    service = _service(request, session, actor)
    key_allowed = grants(actor.permissions, KEY_EXPORT_PERMISSION)
    # A HEAD is answered as this GET, the file made for its length, but sent it is not: no
    # key left the server, so no key export is audited (docs/audit.md).
    delivered = not answers_head(request)
    return download(service.export(cert_id, format, include_key, password, key_allowed, delivered))


@router.post("/{cert_id}/key")
def private_key(
    request: Request,
    cert_id: RowId,
    session: UnitOfWork,
    actor: Writer,
    body: KeyRequest | None = None,
) -> JSONResponse:
    """The stored private key as PKCS#8 PEM, encrypted under `passphrase` when one is given.
    Needs write:certificates (as every key export does) and is audited."""
    passphrase = body.passphrase if body else None
    pem = _service(request, session, actor).private_key_pem(cert_id, passphrase)
    data = {"id": cert_id, "format": "pem", "encrypted": bool(passphrase), "private_key": pem}
    return ok(data, "Private key exported")


@router.post("/{cert_id}/renew", status_code=201)
def renew_certificate(
    request: Request,
    cert_id: RowId,
    session: UnitOfWork,
    actor: Writer,
    body: Renew | None = None,
) -> JSONResponse:
    body = body or Renew()
    renewed = _service(request, session, actor).renew(cert_id, body.validity_days, body.ca_id)
    return ok(
        views.certificate_view(renewed, now(request)),
        "Certificate renewed successfully",
        status=201,
    )


@router.post("/{cert_id}/revoke")
def revoke_certificate(
    request: Request,
    cert_id: RowId,
    session: UnitOfWork,
    actor: Deleter,
    body: Revoke | None = None,
) -> JSONResponse:
    body = body or Revoke()
    cert = _service(request, session, actor).revoke(
        cert_id, body.reason, body.comments, body.invalidity_date
    )
    if cert.status == "revoked":
        message = "Certificate revoked successfully"
    else:
        message = "Certificate released from hold"
    return ok(views.certificate_view(cert, now(request)), message)


@router.delete("/{cert_id}", status_code=204)
def delete_certificate(
    request: Request, cert_id: RowId, session: UnitOfWork, actor: Deleter
) -> Response:
    _service(request, session, actor).delete(cert_id)
    return Response(status_code=204)
