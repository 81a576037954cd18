"""Dashboard: /api/v2/dashboard/... and /api/v2/stats/overview."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse

from tessera import __version__
from tessera.api.deps import UnitOfWork, now, repositories, require, runtime
from tessera.api.routing import PrefixRouter
from tessera.api.v2 import views
from tessera.api.v2.envelope import iso, ok
from tessera.api.v2.params import empty_is
from tessera.domains.actor import Actor
from tessera.domains.dashboard.service import (
    MAX_EXPIRY_DAYS,
    MAX_TREND_DAYS,
    DashboardService,
    SystemStatus,
)
from tessera.storage import models

router = PrefixRouter(tags=["Dashboard"])
Reader = Annotated[Actor, Depends(require("read:certificates"))]
CAReader = Annotated[Actor, Depends(require("read:cas"))]
AuditReader = Annotated[Actor, Depends(require("read:audit"))]
# Sent empty (`?days=&limit=`), a parameter is not sent, as on every listing (params.py).
ExpiringLimit = Annotated[int, Query(ge=1, le=100), empty_is(10)]
RecentLimit = Annotated[int, Query(ge=1, le=100), empty_is(5)]
ActivityLimit = Annotated[int, Query(ge=1, le=100), empty_is(20)]
Offset = Annotated[int, Query(ge=0, le=10_000_000), empty_is(0)]
ExpiryDays = Annotated[int, Query(ge=1, le=MAX_EXPIRY_DAYS), empty_is(30)]
TrendDays = Annotated[int, Query(ge=1, le=MAX_TREND_DAYS), empty_is(30)]


def _service(request: Request, session: UnitOfWork, actor: Actor) -> DashboardService:
    return DashboardService(repositories(session, actor), now(request), actor.permissions)


@router.get("/dashboard/stats")
def stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).stats())


@router.get("/dashboard/expiring-certs")
def expiring_certs(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    days: ExpiryDays = 30,
    limit: ExpiringLimit = 10,
) -> JSONResponse:
    moment = now(request)
    rows = _service(request, session, actor).expiring(days, limit)
    return ok([_expiring_view(r, moment) for r in rows])


@router.get("/dashboard/recent-cas")
def recent_cas(
    request: Request, session: UnitOfWork, actor: Reader, _cas: CAReader, limit: RecentLimit = 5
) -> JSONResponse:
    rows, counts = _service(request, session, actor).recent_cas(limit)
    return ok([views.ca_view(r, counts.get(r.id, 0)) for r in rows])


@router.get("/dashboard/activity")
def activity(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    _audit: AuditReader,
    limit: ActivityLimit = 20,
    offset: Offset = 0,
) -> JSONResponse:
    rows, more = _service(request, session, actor).activity(limit, offset)
    meta = {"limit": limit, "offset": offset, "has_more": more}
    return ok([_activity_view(r) for r in rows], meta=meta)


@router.get("/dashboard/system-status")
def system_status(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    rt = runtime(request)
    status = _service(request, session, actor).system_status(
        rt.settings.data_dir, rt.started_at, __version__
    )
    return ok(_status_view(status))


@router.get("/dashboard/certificate-trend")
def certificate_trend(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    days: TrendDays = 30,
) -> JSONResponse:
    return ok({"trend": _service(request, session, actor).trend(days)})


@router.get("/stats/overview")
def overview(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).overview())


def _expiring_view(cert: models.Certificate, moment: datetime) -> dict[str, Any]:
    return {
        **views.certificate_view(cert, moment),
        "days_remaining": (cert.not_after - moment).days,
    }


def _activity_view(row: models.AuditLog) -> dict[str, Any]:
    return {
        "id": row.id,
        "timestamp": iso(row.timestamp),
        "user_id": row.user_id,
        "username": row.username,
        "action": row.action,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "details": row.details or {},
        "success": row.success,
        "ip_address": row.ip_address,
    }


def _status_view(status: SystemStatus) -> dict[str, Any]:
    disk = status.disk
    return {
        "status": "healthy" if status.healthy else "degraded",
        "database": "connected" if status.database_ok else "disconnected",
        "disk_usage": None
        if disk is None
        else {
            "used": _size(disk.used),
            "total": _size(disk.total),
            "percent": disk.percent,
            "used_bytes": disk.used,
            "total_bytes": disk.total,
        },
        "uptime": str(status.uptime),
        "uptime_seconds": int(status.uptime.total_seconds()),
        "version": status.version,
    }


def _size(n: int) -> str:
    """Bytes as the seed shows them: "2.1GB", "50GB" (binary multiples)."""
    value, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if value < 1024 or unit == "PB":
            break
        value /= 1024
    return f"{value:.1f}".removesuffix(".0") + unit
