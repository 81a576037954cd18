"""OCSP management: GET /api/v2/ocsp/status and GET /api/v2/ocsp/stats."""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, now, repositories, require, runtime
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import iso, ok
from tessera.domains.actor import Actor
from tessera.domains.ocsp.management import OCSPManagement

router = PrefixRouter(tags=["CRL & OCSP"])
Reader = Annotated[Actor, Depends(require("read:cas"))]


def _service(request: Request, session: UnitOfWork, actor: Actor) -> OCSPManagement:
    rt = runtime(request)
    url = f"{rt.settings.http_base}/ocsp"
    return OCSPManagement(repositories(session, actor), rt.settings, request.app.state.ocsp, url)


@router.get("/ocsp/status")
def status(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    data = _service(request, session, actor).status(now(request))
    for responder in data["responders"]:
        responder["signer"] = _dates(responder["signer"])
    return ok(data)


@router.get("/ocsp/stats")
def stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(_service(request, session, actor).stats())


def _dates(signer: dict[str, Any] | None) -> dict[str, Any] | None:
    if signer is None:
        return None
    return {
        **signer,
        "not_before": iso(signer["not_before"]),
        "not_after": iso(signer["not_after"]),
    }
