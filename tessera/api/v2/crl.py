"""CRL management: /api/v2/crl (list), /api/v2/crl/{ca_id}, /api/v2/crl/{ca_id}/regenerate."""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, now, repositories, require, runtime
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import iso, ok
from tessera.api.v2.params import RowId
from tessera.domains.actor import Actor
from tessera.domains.crl.publisher import CRLPublisher
from tessera.domains.crl.service import CRLInfo, CRLService
from tessera.storage.models_crl import PublishedCRL

router = PrefixRouter(prefix="/crl", tags=["CRL & OCSP"])
Reader = Annotated[Actor, Depends(require("read:cas"))]
Writer = Annotated[Actor, Depends(require("write:cas"))]


def _service(request: Request, session: UnitOfWork, actor: Actor) -> CRLService:
    repos = repositories(session, actor)
    return CRLService(repos, runtime(request).publication, now(request))


@router.get("")
def list_crls(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    infos = _service(request, session, actor).overview()
    return ok([crl_view(info) for info in infos], meta={"total": len(infos)})


@router.get("/{ca_id}")
def get_crl(request: Request, ca_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(crl_view(_service(request, session, actor).detail(ca_id)))


@router.post("/{ca_id}/regenerate")
def regenerate_crl(
    request: Request, ca_id: RowId, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    service = _service(request, session, actor)
    service.ca(ca_id)  # 404 for a CA of another organization, before anything is signed
    # The publisher writes in its own short transactions. Whatever this request wrote so far
    # (an API key's last use) is committed first: on SQLite an open write here would hold
    # the database's write lock while the publisher waits for it.
    session.commit()
    publisher: CRLPublisher = request.app.state.crl_publisher
    publisher.regenerate(ca_id, actor)  # its own transactions, audited there
    return ok(crl_view(service.detail(ca_id)), "CRL regenerated successfully")


def crl_view(info: CRLInfo) -> dict[str, Any]:
    full, state = info.full, info.state
    view: dict[str, Any] = {
        "ca_id": info.ca.id,
        "ca_refid": info.ca.refid,
        "ca_name": info.ca.name,
        "common_name": info.ca.common_name,
        "status": _status(info),
        "crl_number": full.crl_number if full else None,
        "this_update": iso(full.this_update) if full else None,
        "next_update": iso(full.next_update) if full else None,
        "revoked_count": full.entries if full else 0,
        "size": full.size if full else 0,
        "sha256": full.sha256 if full else None,
        "cdp_url": info.crl_url,
        "pem_url": info.crl_url.removesuffix(".crl") + ".pem",
        "delta_enabled": info.delta_url is not None,
        "delta_url": info.delta_url,
        "delta": _delta_view(info.delta),
        "last_generated": iso(state.built_at) if state else None,
        "next_scheduled": iso(state.due_at) if state else None,
        "last_error": state.last_error if state else None,
    }
    if info.pem is not None:
        view["crl_pem"] = info.pem
    return view


def _delta_view(delta: PublishedCRL | None) -> dict[str, Any] | None:
    if delta is None:
        return None
    return {
        "crl_number": delta.crl_number,
        "base_crl_number": delta.base_number,
        "this_update": iso(delta.this_update),
        "next_update": iso(delta.next_update),
        "entries": delta.entries,
        "size": delta.size,
    }


def _status(info: CRLInfo) -> str:
    if not info.can_sign:
        return "unavailable"  # no key here or expired: nothing can be signed
    if info.full is None:
        return "pending"
    return "error" if info.state is not None and info.state.last_error else "published"
