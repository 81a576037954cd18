"""Certificates: /api/v2/certificates."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, issuance, now, require
from tessera.api.v2 import views
from tessera.api.v2.envelope import download, ok, page_meta
from tessera.api.v2.params import Page, PerPage, QueryRowId, RowId
from tessera.api.v2.schemas import IssueCertificate, Renew, Revoke
from tessera.core.names import SubjectFields
from tessera.domains.actor import Actor
from tessera.domains.certificates.service import CertificateService, NewCertificate
from tessera.domains.identity.permissions import grants
from tessera.storage.repositories.certificates import CertificateFilter

router = APIRouter(prefix="/certificates", tags=["Certificates"])
Reader = Annotated[Actor, Depends(require("read:certificates"))]
Writer = Annotated[Actor, Depends(require("write:certificates"))]
Deleter = Annotated[Actor, Depends(require("delete:certificates"))]
KEY_EXPORT_PERMISSION = "write:certificates"


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
    per_page: PerPage = 50,
) -> JSONResponse:
    service = _service(request, session, actor)
    filters = CertificateFilter(status=status or None, ca_id=ca_id, search=search or None)
    rows, total = service.search(filters, page, per_page)
    moment = now(request)
    data = [views.certificate_view(r, moment) for r in rows]
    return ok(data, meta=page_meta(page, per_page, total))


@router.post("", status_code=201)
def issue_certificate(
    request: Request, body: IssueCertificate, session: UnitOfWork, actor: Writer
) -> JSONResponse:
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
    cert = _service(request, session, actor).issue(spec)
    return ok(
        views.certificate_view(cert, now(request)), "Certificate issued successfully", status=201
    )


@router.get("/stats")
def stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).stats())


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
    return download(service.export(cert_id, format, include_key, password, key_allowed))


@router.post("/{cert_id}/renew", status_code=201)
def renew_certificate(
    request: Request,
    cert_id: RowId,
    session: UnitOfWork,
    actor: Writer,
    body: Renew | None = None,
) -> JSONResponse:
    renewed = _service(request, session, actor).renew(cert_id, body.validity_days if body else None)
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
    cert = _service(request, session, actor).revoke(cert_id, body.reason, body.comments)
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
