"""Trust store: /api/v2/truststore (add, list, get, delete, stats, import, system sync)."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tessera.api.deps import UnitOfWork, now, repositories, require
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import iso, ok, page_meta
from tessera.api.v2.params import Page, PerPage50, RowId
from tessera.api.v2.schemas import AddTrustedCertificate
from tessera.api.v2.uploads import PASSWORD, read_upload, text, upload_body
from tessera.api.v2.views import serial
from tessera.domains.actor import Actor
from tessera.domains.truststore.service import Added, TrustDetails, TrustStoreService
from tessera.storage import models
from tessera.storage.repositories.truststore import TrustFilter

router = PrefixRouter(prefix="/truststore", tags=["Trust Store"])
Reader = Annotated[Actor, Depends(require("read:truststore"))]
Writer = Annotated[Actor, Depends(require("write:truststore"))]
Deleter = Annotated[Actor, Depends(require("delete:truststore"))]


def _service(request: Request, session: UnitOfWork, actor: Actor) -> TrustStoreService:
    return TrustStoreService(repositories(session, actor), actor, now(request))


def trusted_view(row: models.TrustedCertificate, moment: datetime) -> dict[str, Any]:
    status = "valid"
    if row.not_after <= moment:
        status = "expired"
    elif row.not_before > moment:
        status = "not_yet_valid"
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "purpose": row.purpose,
        "notes": row.notes,
        "source": row.source,
        "common_name": row.common_name,
        "subject": row.subject,
        "issuer": row.issuer,
        "serial_number": serial(row.serial_number),
        "valid_from": iso(row.not_before),
        "valid_until": iso(row.not_after),
        "status": status,
        "is_root": row.is_root and row.is_ca,  # rows stored before is_root required a CA
        "is_ca": row.is_ca,
        "fingerprint_sha256": bytes.fromhex(row.fingerprint_sha256).hex(":").upper(),
        "created_at": iso(row.created_at),
    }


def _added_view(outcome: Added, moment: datetime) -> dict[str, Any]:
    return {
        "imported": len(outcome.rows),
        "added": len(outcome.rows),
        "skipped": outcome.skipped,
        "failed": outcome.failed,
        "total": outcome.total,
        "certificates": [trusted_view(r, moment) for r in outcome.rows],
    }


@router.get("")
def list_trusted(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    source: Annotated[str | None, Query(max_length=16)] = None,
    purpose: str | None = None,
    search: str | None = None,
    page: Page = 1,
    per_page: PerPage50 = 50,
) -> JSONResponse:
    """`purpose`: exactly; `search`: in the name, common name or subject (any case)."""
    filters = TrustFilter(source, purpose, search)
    rows, total = _service(request, session, actor).listing(page, per_page, filters)
    moment = now(request)
    return ok([trusted_view(r, moment) for r in rows], meta=page_meta(page, per_page, total))


@router.post("", status_code=201)
def add_trusted(
    request: Request, body: AddTrustedCertificate, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    details = TrustDetails(body.name, body.description, body.purpose, body.notes)
    row = _service(request, session, actor).add(body.certificate, body.password, details)
    return ok(trusted_view(row, now(request)), "Certificate added to the trust store", status=201)


@router.get("/stats")
def stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).stats())


IMPORT_FIELDS = ("certificate", "pem_content", "content")
IMPORT_FORM = {
    "password": PASSWORD,
    "name": text("what each imported certificate is listed as", 200),
    "description": text("a description of the imported certificates", 4000),
    "purpose": text("what they are trusted for", 64),
    "notes": text("notes on the imported certificates", 4000),
}
IMPORT_BODY = upload_body(
    "certificates to trust: PEM (one or many), TRUSTED CERTIFICATE, DER, PKCS#7 or PKCS#12",
    IMPORT_FIELDS,
    **IMPORT_FORM,
)


@router.post("/import", openapi_extra=IMPORT_BODY)
async def import_trusted(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    upload = await read_upload(request, IMPORT_FIELDS, IMPORT_FORM)
    details = TrustDetails(
        upload.text("name") or None,
        upload.text("description") or None,
        upload.text("purpose") or None,
        upload.text("notes") or None,
    )
    service = _service(request, session, actor)
    password = upload.text("password") or None
    outcome = await run_in_threadpool(service.import_file, upload.content, password, details)
    message = f"{len(outcome.rows)} imported, {outcome.skipped} already trusted"
    status = 201 if outcome.rows else 200
    return ok(_added_view(outcome, now(request)), message, status=status)


@router.post("/sync")
def sync(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    outcome = _service(request, session, actor).sync()
    data = {k: v for k, v in _added_view(outcome, now(request)).items() if k != "certificates"}
    message = f"{len(outcome.rows)} added from the system bundle, {outcome.skipped} skipped"
    return ok({**data, "source": "system"}, message)


@router.get("/{cert_id}")
def get_trusted(
    request: Request, cert_id: RowId, session: UnitOfWork, actor: Reader
) -> JSONResponse:
    service = _service(request, session, actor)
    row = service.get(cert_id)
    details = {**trusted_view(row, now(request)), **service.details(row)}
    details.update(serial_number=serial(row.serial_number), is_ca=row.is_ca)
    return ok({**details, "pem": row.certificate_pem})


@router.delete("/{cert_id}", status_code=204)
def delete_trusted(
    request: Request, cert_id: RowId, session: UnitOfWork, actor: Deleter
) -> Response:
    _service(request, session, actor).delete(cert_id)
    return Response(status_code=204)
