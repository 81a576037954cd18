"""Smart import: /api/v2/import (analyze, execute, formats).

Content comes as JSON {"content", "password", "options"} (PEM text, or base64 of a DER,
PKCS#12 or PKCS#7 file, optionally prefixed "BASE64:") or as multipart/form-data with a
`file` part and `password` and option fields. Analyzing changes nothing and needs
read:certificates; executing needs write:certificates, and write:cas (write:csrs) when the
content holds CA certificates (CSRs) that are to be imported. Parsing and signature checks
run in the thread pool, off the event loop.
"""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tessera.api.deps import UnitOfWork, issuance, now, require
from tessera.api.openapi import model_schema, request_body
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import ok
from tessera.api.v2.schemas import (
    OpnsenseConnection,
    OpnsenseImport,
    SmartImport,
    SmartImportOptions,
)
from tessera.api.v2.uploads import FILE, MAX_UPLOAD, PASSWORD, Upload, flag, read_upload
from tessera.core.errors import InvalidInput
from tessera.core.formats import decode_text, decode_upload
from tessera.domains.actor import Actor
from tessera.domains.imports import opnsense
from tessera.domains.imports.service import FORMATS, ExecuteOptions, ImportService

router = PrefixRouter(prefix="/import", tags=["Smart Import"])
Reader = Annotated[Actor, Depends(require("read:certificates"))]
Writer = Annotated[Actor, Depends(require("write:certificates"))]
MAX_JSON = 2 * MAX_UPLOAD  # base64 text of a file at the upload limit, with room to spare


def _service(request: Request, session: UnitOfWork, actor: Actor) -> ImportService:
    return ImportService(issuance(request, session, actor), now(request))


# What `_read` reads: multipart (`file`, `password` and the option flags) or a SmartImport.
FLAGS = {
    "import_cas": flag(True, "import CA certificates"),
    "import_certificates": flag(True, "import certificates"),
    "import_certs": flag(True, "import_certificates under UCM's name, which it overrides"),
    "import_keys": flag(True, "import private keys"),
    "import_csrs": flag(True, "import CSRs"),
}
WHAT = "PEM, DER, PKCS#12 or PKCS#7 (in JSON: PEM, or base64 of a binary file)"
FIELDS = {"password": PASSWORD, **FLAGS}  # the multipart fields besides `file`
FORM = {"file": {**FILE, "description": WHAT}, "password": PASSWORD.form}
SMART_IMPORT_BODY = request_body(
    f"the content to import: {WHAT}; multipart or JSON",
    {
        "multipart/form-data": {
            "type": "object",
            "properties": FORM | {name: described.form for name, described in FLAGS.items()},
            "required": ["file"],
        },
        "application/json": model_schema(SmartImport),
    },
)


@router.post("/analyze", openapi_extra=SMART_IMPORT_BODY)
async def analyze(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    content, password, _ = await _read(request)
    service = _service(request, session, actor)
    return ok(await run_in_threadpool(service.analyze, content, password))


@router.post("/execute", openapi_extra=SMART_IMPORT_BODY)
async def execute(request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    content, password, options = await _read(request)
    service = _service(request, session, actor)
    result = await run_in_threadpool(service.execute, content, password, options)
    stored = sum(result[k] for k in ("cas_imported", "certificates_imported", "csrs_imported"))
    return ok(result, f"{stored} objects imported, {len(result['errors'])} failed")


@router.get("/formats")
def formats(actor: Reader) -> JSONResponse:
    return ok(FORMATS)


@router.post("/opnsense/test")
async def opnsense_test(body: OpnsenseConnection, actor: Writer) -> JSONResponse:
    """Connect to an OPNsense firewall's API and list its trust store's CAs and certificates."""
    entries = await run_in_threadpool(opnsense.list_entries, _target(body))
    items = [{"id": e.uuid, "type": opnsense.KINDS[e.kind], "name": e.name} for e in entries]
    stats = {"cas": sum(e.kind == "ca" for e in entries)}
    stats["certificates"] = len(entries) - stats["cas"]
    return ok({"success": True, "items": items, "stats": stats}, "Connected to OPNsense")


@router.post("/opnsense/import")
async def opnsense_import(
    request: Request, body: OpnsenseImport, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    """Fetch the firewall's CAs and certificates with their keys (all, or `items` by uuid)
    and store them as the smart import does; fetched before the transaction begins."""
    kinds = tuple(
        k for k, on in (("ca", body.import_cas), ("cert", body.import_certificates)) if on
    )
    uuids = set(body.items) if body.items is not None else None
    fetched = await run_in_threadpool(opnsense.fetch, _target(body), kinds, uuids)
    if not fetched.pem:
        raise InvalidInput("OPNsense lists nothing to import")
    options = ExecuteOptions(body.import_cas, body.import_certificates, body.import_keys, False)
    service = _service(request, session, actor)
    content = "".join(fetched.pem).encode("ascii", "replace")
    result = await run_in_threadpool(service.execute, content, None, options)
    stored = sum(result[k] for k in ("cas_imported", "certificates_imported"))
    return ok(result, f"{stored} objects imported from OPNsense, {len(result['errors'])} failed")


def _target(body: OpnsenseConnection) -> opnsense.Target:
    host = body.host.strip().removeprefix("https://").rstrip("/")
    if not host or not all(c.isalnum() or c in ".-:[]" for c in host):
        raise InvalidInput("host must be a host name or an IP address")
    host = host.removeprefix("[").removesuffix("]")
    return opnsense.Target(host, body.port, body.api_key, body.api_secret, body.verify_ssl)


async def _read(request: Request) -> tuple[bytes, str | None, ExecuteOptions]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload = await read_upload(request, ("content",), FIELDS)
        return decode_upload(upload.content), upload.text("password"), _flags(upload)
    body = await request.body()
    if len(body) > MAX_JSON:
        raise InvalidInput("upload too large")
    try:
        parsed = SmartImport.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    options = _options(parsed.options or SmartImportOptions())
    return decode_text(parsed.content), parsed.password, options


def _options(given: SmartImportOptions) -> ExecuteOptions:
    certificates = given.import_certificates if given.import_certs is None else given.import_certs
    return ExecuteOptions(given.import_cas, certificates, given.import_keys, given.import_csrs)


def _flags(upload: Upload) -> ExecuteOptions:
    return ExecuteOptions(
        upload.flag("import_cas", True),
        upload.flag("import_certificates", upload.flag("import_certs", True)),
        upload.flag("import_keys", True),
        upload.flag("import_csrs", True),
    )
