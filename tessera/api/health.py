"""Health: /api/v2/health (+ /ready, /live) and the aliases /api/health and /health."""

import os
import tempfile

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from tessera import __version__
from tessera.api.deps import runtime
from tessera.api.routing import PrefixRouter
from tessera.core.limits import HEALTH_BASES

# The seed's service identifier: clients written for it check this value.
SERVICE = "ucm"


def _health(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "status": "ok",
            "service": SERVICE,
            "version": __version__,
            "started_at": runtime(request).started_at,
            "websocket": False,
        }
    )


def _ready(request: Request) -> JSONResponse:
    rt = runtime(request)
    checks = {"database": _check_database(rt.engine), "filesystem": _check_fs(rt.settings.data_dir)}
    ready = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive", "service": SERVICE})


def _check_database(engine: object) -> dict[str, str]:
    try:
        with engine.connect() as connection:  # type: ignore[attr-defined]
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return {"status": "error", "error": type(exc).__name__}
    return {"status": "ok"}


def _check_fs(directory: object) -> dict[str, str]:
    try:
        with tempfile.NamedTemporaryFile(dir=str(directory), prefix=".ready-") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return {"status": "error", "error": exc.strerror or type(exc).__name__}
    return {"status": "ok"}


def router() -> PrefixRouter:
    routes = PrefixRouter(tags=["Health"])
    for base in HEALTH_BASES:
        for path, check in ((base, _health), (f"{base}/ready", _ready), (f"{base}/live", _live)):
            routes.add_api_route(path, check, methods=["GET"])
            # HEAD too, as many load-balancer probes send; undocumented, as GET's twin.
            routes.add_api_route(path, check, methods=["HEAD"], include_in_schema=False)
    return routes
