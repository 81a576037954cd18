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
from tessera.api.v2.schemas import SmartImport, SmartImportOptions
from tessera.api.v2.uploads import FILE, MAX_UPLOAD, PASSWORD, Upload, flag, read_upload
from tessera.core.errors import InvalidInput
from tessera.core.formats import decode_text, decode_upload
from tessera.domains.actor import Actor
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


async def _read(request: Request) -> tuple[bytes, str | None, ExecuteOptions]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload = await read_upload(request, ("content",))
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
