"""The one place where typed errors become wire errors, per dialect (by path prefix)."""

import json
import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException

from tessera.core.errors import TesseraError
from tessera.protocols.acme.problems import AcmeProblem, generic_problem, problem_response

log = logging.getLogger("tessera.errors")

ErrorFormatter = Callable[[int, str], Response]


def v2_error(status: int, message: str) -> Response:
    return JSONResponse({"error": True, "code": status, "message": message}, status_code=status)


# Longest prefix wins; later dialects (ACME problem documents, Puppet, VCC...) register here.
FORMATTERS: dict[str, ErrorFormatter] = {"/": v2_error}
# ACME (RFC 8555 6.7): RFC 7807 problem documents with the ACME error types.
FORMATTERS["/acme/"] = generic_problem


def platform_v1_error(status: int, message: str) -> Response:
    """The platform dialect (seed 004) is a FastAPI service: errors are {"detail": ...}."""
    return JSONResponse({"detail": message}, status_code=status)


# Platform dialect (seed 004): audit events and audit export (other /api/v1 dialects differ).
FORMATTERS["/api/v1/audit"] = platform_v1_error


def _formatter(request: Request) -> ErrorFormatter:
    path = request.url.path
    prefix = max((p for p in FORMATTERS if path.startswith(p)), key=len)
    return FORMATTERS[prefix]


def install(app: FastAPI) -> None:
    @app.exception_handler(AcmeProblem)
    async def acme_problem(request: Request, exc: AcmeProblem) -> Response:
        return problem_response(exc)

    @app.exception_handler(TesseraError)
    async def domain_error(request: Request, exc: TesseraError) -> Response:
        return _formatter(request)(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        response = _formatter(request)(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _formatter(request)(400, "malformed JSON body")
        return _formatter(request)(422, _describe(errors))

    @app.exception_handler(IntegrityError)
    async def integrity_error(request: Request, exc: IntegrityError) -> Response:
        # Two requests raced past a uniqueness check; the database kept one. The transaction
        # was rolled back, so nothing is half-written.
        if _missing_value(exc):
            # A null no model check caught: most likely the request's, so a 4xx that says
            # what is wrong; logged as a warning, since it may be a column the code forgot.
            log.warning("NOT NULL on %s %s: %s", request.method, request.url.path, loggable(exc))
            return _formatter(request)(422, "a required value is missing (null)")
        log.info("integrity conflict on %s %s: %s", request.method, request.url.path, loggable(exc))
        taken = _taken(exc)
        message = taken or "conflicts with an existing record; retry or reload"
        return _formatter(request)(409, message)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> Response:
        # A value the column cannot hold (too long, out of range) that no check caught first.
        log.warning("data error on %s %s: %s", request.method, request.url.path, loggable(exc))
        return _formatter(request)(400, "a value is too long or out of range")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # exc_info from the exception itself: a lane answers it outside its except block
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _formatter(request)(500, "internal error; see the server log")


# What a row of these tables is called in a message (others: the table's name).
_ROW_NOUNS = {
    "templates": "template",
    "users": "user",
    "user_groups": "group",
    "scep_profiles": "SCEP profile",
    "organizations": "organization",
    "trusted_certificates": "trusted certificate",
}


def _taken(exc: IntegrityError) -> str | None:
    """For a unique value two requests raced for, what was taken ("a template with this name
    already exists"): the table and columns from the database's report, never the values,
    which may be secret (a key's hash) or another tenant's."""
    report = str(exc.orig)
    table, columns = "", []
    if report.startswith("UNIQUE constraint failed: "):  # SQLite: "t.a, t.b"
        qualified = [c.strip() for c in report.split(": ", 1)[1].split(",")]
        table = qualified[0].partition(".")[0]
        columns = [c.partition(".")[2] for c in qualified]
    elif getattr(exc.orig, "sqlstate", None) == "23505":  # PostgreSQL: "Key (a, b)=(...)"
        diag = getattr(exc.orig, "diag", None)
        table = getattr(diag, "table_name", None) or ""
        detail = getattr(diag, "message_detail", None) or ""
        if detail.startswith("Key (") and ")=(" in detail:
            columns = [c.strip() for c in detail[5:].split(")=(", 1)[0].split(",")]
    named = [c for c in columns if c and c != "org_id"]
    if not table or not named:
        return None
    noun = _ROW_NOUNS.get(table, table.replace("_", " "))
    return f"a {noun} with this {' and '.join(named)} already exists"


def loggable(exc: IntegrityError | DataError) -> str:
    """What the log may say of a database error: PostgreSQL's SQLSTATE with the table, column
    and constraint it names, or SQLite's message (which names columns, never values).
    PostgreSQL's own text carries the values ("Key (secret)=(...)", "Failing row contains
    (...)", a whole row with its password hash), which the log must not hold either."""
    diag = getattr(exc.orig, "diag", None)
    if diag is None:
        return str(exc.orig)
    parts = [f"SQLSTATE {getattr(exc.orig, 'sqlstate', None)}"]
    for label in ("table", "column", "constraint"):
        named = getattr(diag, f"{label}_name", None)
        if named:
            parts.append(f"{label} {named}")
    return ", ".join(parts)


def _missing_value(exc: IntegrityError) -> bool:
    """A NOT NULL violation: SQLSTATE 23502 on PostgreSQL, SQLite's own message."""
    state = getattr(exc.orig, "sqlstate", None)
    return state == "23502" or str(exc.orig).startswith("NOT NULL constraint failed")


def _describe(errors: object) -> str:
    parts = []
    for error in errors if isinstance(errors, list | tuple) else []:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or json.dumps(errors, default=str)[:300]
