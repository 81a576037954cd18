"""Audit Logs (/api/v2/audit/...) and, under System, Audit Retention and Syslog
(/api/v2/system/audit/...)."""

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tessera.api.deps import UnitOfWork, now, repositories, require, require_system, runtime
from tessera.api.routing import PrefixRouter, answers_head
from tessera.api.v2.envelope import iso, ok, page_meta
from tessera.api.v2.params import Page, PerPage50, QueryRowId, RowId
from tessera.api.v2.schemas import NO_BOOL, Integer, Port
from tessera.core.clock import as_utc, later
from tessera.core.errors import InvalidInput
from tessera.domains.actor import Actor
from tessera.domains.audit.redaction import csv_cell, exported_details
from tessera.domains.audit.service import MAX_RETENTION_DAYS, AuditService, export_batches
from tessera.storage.models import AuditLog
from tessera.storage.repositories.audit import AuditFilter

router = PrefixRouter(prefix="/audit", tags=["Audit Logs"])
system_router = PrefixRouter(prefix="/system/audit", tags=["System"])
Reader = Annotated[Actor, Depends(require("read:audit"))]
Deleter = Annotated[Actor, Depends(require("delete:audit"))]
Admin = Annotated[Actor, Depends(require("admin:system"))]
# Retention and syslog hold for every organization's audit log: the default organization's.
SystemAdmin = Annotated[Actor, Depends(require_system("admin:system"))]

EXPORT_MAX = 1_000_000
CSV_COLUMNS = (
    "id",
    "timestamp",
    "username",
    "action",
    "resource_type",
    "resource_id",
    "details",
    "ip_address",
    "user_agent",
    "success",
)


def only_params(*allowed: str) -> Any:
    """Unknown query parameters are a 400, not silently ignored: a misspelt filter would
    otherwise return everything."""

    def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - set(allowed))
        if unknown:
            raise InvalidInput(
                f"unknown query parameter(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}"
            )

    return Depends(check)


def parse_moment(name: str, value: str | None, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or datetime, in UTC; a date alone is that whole day (UTC); no zone
    is UTC."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), UTC)
            return later(moment, timedelta(days=1)) if end_of_day else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name}: {value!r} is not an ISO 8601 date or datetime") from None
    return as_utc(parsed, name)


def log_view(row: AuditLog, for_export: bool = False) -> dict[str, Any]:
    """An exported row has its details masked (redaction.py) like every other export."""
    details = exported_details(row.details) if for_export else row.details or {}
    return {
        "id": row.id,
        "timestamp": iso(row.timestamp),
        "user_id": row.user_id,
        "username": row.username,
        "action": row.action,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        # The seed's `details` is text; the structured original is beside it.
        "details": json.dumps(details, separators=(",", ":"), sort_keys=True),
        "details_data": details,
        "ip_address": row.ip_address,
        "user_agent": row.user_agent,
        "success": row.success,
        "request_id": row.request_id,
        "chain_seq": row.chain_seq,
    }


def _filters(
    username: str | None,
    action: str | None,
    success: bool | None,
    date_from: str | None,
    date_to: str | None,
    search: str | None,
) -> AuditFilter:
    since = parse_moment("date_from", date_from)
    before = parse_moment("date_to", date_to, end_of_day=True)
    if since and before and since >= before:
        raise InvalidInput("date_from must be before date_to")
    return AuditFilter(
        username=username or None,
        action=action or None,
        success=success,
        since=since,
        before=before,
        search=(search or "").strip()[:200] or None,
    )


Text = Annotated[str | None, Query(max_length=200)]
FILTERS = ("username", "action", "success", "date_from", "date_to", "search")


def _service(request: Request, session: UnitOfWork, actor: Actor) -> AuditService:
    return AuditService(repositories(session, actor), actor, now(request))


@router.get("/logs", dependencies=[only_params("page", "per_page", *FILTERS)])
def list_logs(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    page: Page = 1,
    per_page: PerPage50 = 50,
    username: Text = None,
    action: Text = None,
    success: bool | None = None,
    date_from: Text = None,
    date_to: Text = None,
    search: Text = None,
) -> JSONResponse:
    filters = _filters(username, action, success, date_from, date_to, search)
    rows, total = _service(request, session, actor).page(filters, (page - 1) * per_page, per_page)
    return ok([log_view(r) for r in rows], meta=page_meta(page, per_page, total))


@router.get("/logs/{log_id}")
def get_log(log_id: RowId, request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(log_view(_service(request, session, actor).get(log_id)))


@router.get("/stats", dependencies=[only_params("days")])
def stats(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    days: Annotated[int, Query(ge=1, le=MAX_RETENTION_DAYS)] = 30,
) -> JSONResponse:
    found = _service(request, session, actor).stats(days)
    found["recent_failures"] = [log_view(r) for r in found["recent_failures"]]
    return ok(found)


@router.get("/actions", dependencies=[only_params()])
def actions(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).actions())


@router.get("/export", dependencies=[only_params("format", "limit", *FILTERS)])
def export(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    limit: Annotated[int, Query(ge=1, le=EXPORT_MAX)] = 10_000,
    username: Text = None,
    action: Text = None,
    success: bool | None = None,
    date_from: Text = None,
    date_to: Text = None,
    search: Text = None,
) -> Response:
    filters = _filters(username, action, success, date_from, date_to, search)
    batches: Iterator[list[AuditLog]] = iter(())
    if not answers_head(request):  # a HEAD sends no rows: nothing to audit, none to read
        _service(request, session, actor).note_export(format, filters, limit)
        # The audit row above commits with the request; the rows stream afterwards.
        batches = export_batches(runtime(request).sessions, actor.org_id, filters, limit)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if format == "csv":
        body, media = _csv(batches), "text/csv; charset=utf-8"
    else:
        body, media = _json(batches), "application/json"
    headers = {"Content-Disposition": f'attachment; filename="audit-logs-{stamp}.{format}"'}
    return StreamingResponse(body, media_type=media, headers=headers)


def _json(batches: Iterator[list[AuditLog]]) -> Iterator[bytes]:
    yield b"["
    first = True
    for batch in batches:
        for row in batch:
            yield (b"" if first else b",") + json.dumps(log_view(row, for_export=True)).encode()
            first = False
    yield b"]"


def _csv(batches: Iterator[list[AuditLog]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for batch in batches:
        for row in batch:
            view = log_view(row, for_export=True)
            writer.writerow([_cell(view[c]) for c in CSV_COLUMNS])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


def _cell(value: Any) -> Any:
    return csv_cell(value) if isinstance(value, str) else value


class CleanupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS), NO_BOOL] | None = None


def _cleanup(request: Request, session: UnitOfWork, actor: Actor, body: CleanupBody | None) -> Any:
    done = _service(request, session, actor).cleanup(body.retention_days if body else None)
    done["cutoff"] = iso(done["cutoff"])
    return ok(done, f"Deleted {done['deleted']} audit log(s)")


@router.post("/cleanup")
def cleanup(
    request: Request, session: UnitOfWork, actor: Deleter, body: CleanupBody | None = None
) -> JSONResponse:
    return _cleanup(request, session, actor, body)


@router.get("/verify", dependencies=[only_params("start_id", "end_id")])
def verify(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    start_id: QueryRowId = None,
    end_id: QueryRowId = None,
) -> JSONResponse:
    if start_id is not None and end_id is not None and start_id > end_id:
        raise InvalidInput("start_id must not be greater than end_id")
    return ok(_service(request, session, actor).verify(start_id, end_id))


# --- System: retention and syslog ----------------------------------------------------------


class RetentionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS), NO_BOOL] | None = None
    auto_cleanup: bool | None = None


@system_router.get("/retention")
def get_retention(request: Request, session: UnitOfWork, actor: SystemAdmin) -> JSONResponse:
    return ok(_service(request, session, actor).retention().as_dict())


@system_router.put("/retention")
def put_retention(
    body: RetentionBody, request: Request, session: UnitOfWork, actor: SystemAdmin
) -> JSONResponse:
    updated = _service(request, session, actor).set_retention(
        body.retention_days, body.auto_cleanup
    )
    return ok(updated.as_dict(), "Retention settings updated")


@system_router.post("/cleanup")
def system_cleanup(
    request: Request, session: UnitOfWork, actor: Admin, body: CleanupBody | None = None
) -> JSONResponse:
    return _cleanup(request, session, actor, body)


class SyslogBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    host: str | None = Field(None, max_length=253, pattern=r"^[A-Za-z0-9.:_\-\[\]%]+$")
    port: Port | None = None
    protocol: str | None = Field(None, pattern="^(udp|tcp)$")
    facility: Integer | str | None = None
    app_name: str | None = Field(None, min_length=1, max_length=48, pattern=r"^[!-~]+$")
    hostname: str | None = Field(None, max_length=255, pattern=r"^[!-~]+$")


def _syslog_view(request: Request, config: Any) -> dict[str, Any]:
    forwarder = runtime(request).audit_syslog
    stats = dict(forwarder.stats) if forwarder is not None else {}
    return {**config.as_dict(), "stats": stats}


@system_router.get("/syslog")
def get_syslog(request: Request, session: UnitOfWork, actor: SystemAdmin) -> JSONResponse:
    return ok(_syslog_view(request, _service(request, session, actor).syslog()))


@system_router.put("/syslog")
def put_syslog(
    body: SyslogBody, request: Request, session: UnitOfWork, actor: SystemAdmin
) -> JSONResponse:
    changes = body.model_dump(exclude_unset=True)
    config = _service(request, session, actor).set_syslog(changes)
    forwarder = runtime(request).audit_syslog
    if forwarder is not None:
        forwarder.invalidate()
    return ok(_syslog_view(request, config), "Syslog settings updated")


@system_router.post("/syslog/test")
def test_syslog(request: Request, session: UnitOfWork, actor: SystemAdmin) -> JSONResponse:
    message = _service(request, session, actor).test_syslog()
    return ok({"success": True, "message": message}, message)
