"""Platform audit dialect (seed 004, "Audit Events"): the same audit rows as
/api/v2/audit/logs, in the platform's shapes. Errors are {"detail": ...} (api/errors.py)."""

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tessera.api.deps import UnitOfWork, now, repositories, require, runtime
from tessera.api.routing import PrefixRouter, answers_head
from tessera.api.v2.audit import only_params
from tessera.api.v2.params import MAX_ROW_ID
from tessera.core.clock import as_utc, later
from tessera.domains.actor import Actor
from tessera.domains.audit.redaction import csv_cell, exported_details
from tessera.domains.audit.service import AuditService, export_batches
from tessera.storage.models import AuditLog
from tessera.storage.repositories.audit import AuditFilter

router = PrefixRouter(tags=["Audit Events (platform)"])
Reader = Annotated[Actor, Depends(require("read:audit"))]
OrderBy = Literal[
    "occurred_at",
    "id",
    "action",
    "actor_id",
    "actor_type",
    "entity_type",
    "entity_id",
    "is_success",
    "status_code",
    "request_id",
]
Text = Annotated[str | None, Query(max_length=200)]
EVENT_FILTERS = (
    "actor_id",
    "actor_type",
    "action",
    "entity_type",
    "request_id",
    "is_success",
    "status_code",
    "is_active",
)
EXPORT_COLUMNS = ("timestamp", "user", "action", "resource", "detail")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def event_view(row: AuditLog) -> dict[str, Any]:
    """AuditEventRead. Rows are never soft-deleted here, so is_active is always true."""
    return {
        "id": row.id,
        "occurred_at": _stamp(row.timestamp),
        "actor_id": str(row.user_id) if row.user_id is not None else None,
        "actor_type": row.actor_type,
        "actor_name": row.username,
        "action": row.action,
        "entity_type": row.resource_type,
        "entity_id": row.resource_id,
        "request_id": row.request_id,
        "is_success": row.success,
        "status_code": row.status_code,
        "ip_address": row.ip_address,
        "user_agent": row.user_agent,
        "details": row.details or {},
        "is_active": True,
        "org_id": row.org_id,
        "created_at": _stamp(row.timestamp),
    }


def _service(request: Request, session: UnitOfWork, actor: Actor) -> AuditService:
    return AuditService(repositories(session, actor), actor, now(request))


@router.get(
    "/audit-events",
    dependencies=[only_params(*EVENT_FILTERS, "order_by", "order_dir", "limit", "offset")],
)
def list_events(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    actor_id: Text = None,
    actor_type: Text = None,
    action: Text = None,
    entity_type: Text = None,
    request_id: Text = None,
    is_success: bool | None = None,
    status_code: Annotated[int | None, Query(ge=100, le=599)] = None,
    is_active: bool | None = None,
    order_by: OrderBy = "occurred_at",
    order_dir: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JSONResponse:
    # An actor id is a user id here; one that is no number, or asking for inactive events
    # (none are ever soft-deleted), matches nothing.
    numeric = actor_id and actor_id.isascii() and actor_id.isdigit() and len(actor_id) < 10
    user_id = int(actor_id) if actor_id and numeric else None  # isdigit alone takes "²"
    filters = AuditFilter(
        user_id=user_id,
        actor_type=actor_type,
        action=action,
        resource_type=entity_type,
        request_id=request_id,
        success=is_success,
        status_code=status_code,
        nothing=(bool(actor_id) and user_id is None) or is_active is False,
    )
    rows, total = _service(request, session, actor).ordered(
        filters, order_by, order_dir == "desc", offset, limit
    )
    body = {
        "items": [event_view(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }
    return JSONResponse(body)


@router.get("/audit-events/{event_id}")
def get_event(
    event_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)],
    request: Request,
    session: UnitOfWork,
    actor: Reader,
) -> JSONResponse:
    return JSONResponse(event_view(_service(request, session, actor).get(event_id)))


@router.get(
    "/audit/export", dependencies=[only_params("max_rows", "started_after", "started_before")]
)
def export(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    max_rows: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
) -> Response:
    # In UTC before the body starts: a bound out of range is a 400, not a cut-short 200.
    after = as_utc(started_after, "started_after") if started_after else None
    before = as_utc(started_before, "started_before") if started_before else None
    # "after" is strict; timestamps are stored to the microsecond.
    since = later(after, timedelta(microseconds=1)) if after else None
    filters = AuditFilter(since=since, before=before)
    batches: Iterator[list[AuditLog]] = iter(())
    if not answers_head(request):  # a HEAD sends no rows: nothing to audit, none to read
        _service(request, session, actor).note_export("csv", filters, max_rows)
        batches = export_batches(runtime(request).sessions, actor.org_id, filters, max_rows)
    headers = {
        "Content-Disposition": 'attachment; filename="audit-log.csv"',
        "X-Row-Limit": str(max_rows),
    }
    return StreamingResponse(_csv(batches), media_type="text/csv; charset=utf-8", headers=headers)


def _csv(batches: Iterator[list[AuditLog]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for batch in batches:
        for row in batch:
            writer.writerow(_export_row(row))
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


def _export_row(row: AuditLog) -> list[str]:
    user = str(row.user_id) if row.user_id is not None else (row.username or "")
    resource = ":".join(p for p in (row.resource_type, row.resource_id) if p)
    detail = json.dumps(exported_details(row.details), separators=(",", ":"), sort_keys=True)
    cells = (_stamp(row.timestamp), user, row.action, resource, detail)
    return [csv_cell(c) for c in cells]
