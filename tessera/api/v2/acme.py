"""ACME server management: /api/v2/acme/... (settings, stats, accounts, orders and their
approval, EAB keys, early renewal). The protocol itself is tessera/protocols/acme."""

from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tessera.api.deps import UnitOfWork, issuance, now, repositories, require, runtime
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import iso, ok, page_meta
from tessera.api.v2.params import Page, PerPage50, QueryRowId, RowId
from tessera.api.v2.schemas import NO_BOOL
from tessera.api.v2.schemas import RowId as BodyRowId
from tessera.core.errors import TesseraError
from tessera.domains.acme.admin import AcmeAdmin
from tessera.domains.acme.orders import Orders
from tessera.domains.acme.renewal import mark_for_renewal
from tessera.domains.actor import Actor
from tessera.storage.models_acme import AcmeAccount, AcmeEabKey, AcmeOrder, AcmeSettings

router = PrefixRouter(prefix="/acme", tags=["ACME Server"])
Reader = Annotated[Actor, Depends(require("read:acme"))]
Writer = Annotated[Actor, Depends(require("write:acme"))]


# RFC 8555 7.1.6
OrderStatus = Literal["pending", "ready", "processing", "valid", "invalid"]


class NotImplementedYet(TesseraError):
    status = 501


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=300)
    template_id: BodyRowId | None = None
    validity_days: Annotated[int, Field(ge=1, le=825), NO_BOOL] | None = None


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    issuing_ca_id: BodyRowId | None = None
    template_id: BodyRowId | None = None
    validity_days: Annotated[int, Field(ge=1, le=825), NO_BOOL] | None = None
    require_approval: bool | None = None
    require_eab: bool | None = None
    caa_check_ca_ids: list[BodyRowId] | None = Field(None, max_length=100)
    caa_identities: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        None, max_length=20
    )
    terms_of_service: str | None = Field(None, max_length=500)
    website: str | None = Field(None, max_length=500)
    profiles: dict[str, Profile] | None = Field(None, max_length=50)


class EabBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(None, max_length=300)


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=300)


class ProxyRegisterBody(BaseModel):
    email: str | None = None
    agree_tos: bool | None = None


def _admin(request: Request, session: UnitOfWork, actor: Actor) -> AcmeAdmin:
    return AcmeAdmin(repositories(session, actor), actor, runtime(request).keys, now(request))


def settings_view(row: AcmeSettings, request: Request) -> dict[str, Any]:
    base = runtime(request).settings.https_base
    return {
        "enabled": row.enabled,
        "issuing_ca_id": row.issuing_ca_id,
        "template_id": row.template_id,
        "validity_days": row.validity_days,
        "require_approval": row.require_approval,
        "require_eab": row.require_eab,
        "caa_check_ca_ids": list(row.caa_check_ca_ids or []),
        "caa_identities": list(row.caa_identities or []),
        "terms_of_service": row.terms_of_service,
        "website": row.website,
        "profiles": row.profiles or {},
        "directory_url": f"{base}/acme/directory",
        "updated_at": iso(row.updated_at),
    }


def account_view(row: AcmeAccount, orders: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "contact": list(row.contact or []),
        "key_thumbprint": row.thumbprint,
        "key_type": row.jwk.get("kty"),
        "eab_kid": row.eab_kid,
        "terms_agreed": row.terms_agreed,
        "created_at": iso(row.created_at),
    }
    if orders is not None:
        view["orders_count"] = orders
    return view


def order_view(row: AcmeOrder) -> dict[str, Any]:
    return {
        "id": row.id,
        "account_id": row.account_id,
        "status": row.status,
        "identifiers": row.identifiers,
        "profile": row.profile,
        "not_before": iso(row.not_before),
        "not_after": iso(row.not_after),
        "expires_at": iso(row.expires_at),
        "awaiting_approval": row.awaiting_approval,
        "certificate_id": row.certificate_id,
        "replaces": row.replaces,
        "error": row.error,
        "created_at": iso(row.created_at),
    }


def eab_view(row: AcmeEabKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "kid": row.kid,
        "comment": row.comment,
        "account_id": row.account_id,
        "status": "revoked" if row.revoked_at else ("used" if row.account_id else "unused"),
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "revoked_at": iso(row.revoked_at),
    }


@router.get("/settings")
def get_settings(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(settings_view(_admin(request, session, actor).settings(), request))


@router.patch("/settings")
def update_settings(
    body: SettingsBody, request: Request, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    changes = body.model_dump(exclude_unset=True)
    for flag in ("enabled", "require_approval", "require_eab", "validity_days"):
        if flag in changes and changes[flag] is None:
            changes.pop(flag)
    row = _admin(request, session, actor).update_settings(changes)
    return ok(settings_view(row, request), "ACME settings updated")


@router.get("/stats")
def stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    counts = repositories(session, actor).acme.stats()
    accounts, orders = counts["accounts"], counts["orders"]
    return ok(
        {
            "total_accounts": sum(accounts.values()),
            "active_accounts": accounts.get("valid", 0),
            "total_orders": sum(orders.values()),
            "pending_orders": orders.get("pending", 0) + orders.get("ready", 0),
            "processing_orders": orders.get("processing", 0),
            "valid_orders": orders.get("valid", 0),
            "invalid_orders": orders.get("invalid", 0),
            "accounts_by_status": accounts,
            "orders_by_status": orders,
        }
    )


@router.get("/accounts")
def list_accounts(
    session: UnitOfWork, actor: Reader, page: Page = 1, per_page: PerPage50 = 50
) -> JSONResponse:
    repo = repositories(session, actor).acme
    rows, total = repo.accounts(page, per_page)
    counts = repo.order_counts([r.id for r in rows])
    return ok(
        [account_view(r, counts.get(r.id, 0)) for r in rows], meta=page_meta(page, per_page, total)
    )


@router.get("/accounts/{account_id}")
def get_account(
    account_id: RowId, request: Request, session: UnitOfWork, actor: Reader
) -> JSONResponse:
    row = _admin(request, session, actor).account(account_id)
    return ok(account_view(row, _orders_count(session, actor, row.id)))


@router.post("/accounts/{account_id}/deactivate")
def deactivate_account(
    account_id: RowId, request: Request, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    row = _admin(request, session, actor).deactivate_account(account_id)
    return ok(account_view(row, _orders_count(session, actor, row.id)), "ACME account deactivated")


def _orders_count(session: UnitOfWork, actor: Actor, account_id: int) -> int:
    """The account's orders, as the listing shows them beside each account."""
    return repositories(session, actor).acme.order_counts([account_id]).get(account_id, 0)


@router.get("/orders")
def list_orders(
    session: UnitOfWork,
    actor: Reader,
    page: Page = 1,
    per_page: PerPage50 = 50,
    status: Annotated[OrderStatus | Literal[""] | None, Query()] = None,
    account_id: QueryRowId = None,
) -> JSONResponse:
    # An empty status (a cleared filter box) is no filter, as on every other listing.
    repos = repositories(session, actor)
    rows, total = repos.acme.orders(page, per_page, status or None, account_id)
    return ok([order_view(r) for r in rows], meta=page_meta(page, per_page, total))


@router.get("/orders/{order_id}")
def get_order(
    order_id: RowId, request: Request, session: UnitOfWork, actor: Reader
) -> JSONResponse:
    return ok(order_view(_admin(request, session, actor).order(order_id)))


@router.post("/orders/{order_id}/approve")
def approve_order(
    order_id: RowId, request: Request, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    orders = Orders(issuance(request, session, actor), now(request))
    return ok(order_view(orders.approve(order_id)), "ACME order approved; certificate issued")


@router.post("/orders/{order_id}/reject")
def reject_order(
    order_id: RowId, body: RejectBody, request: Request, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    orders = Orders(issuance(request, session, actor), now(request))
    return ok(order_view(orders.reject(order_id, body.reason)), "ACME order rejected")


@router.get("/eab")
def list_eab(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok([eab_view(r) for r in repositories(session, actor).acme.eab_keys()])


@router.post("/eab", status_code=201)
def create_eab(body: EabBody, request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    created = _admin(request, session, actor).create_eab(body.comment)
    view = {**eab_view(created.row), "hmac_key": created.hmac_key}
    return ok(view, "EAB key created; the HMAC key is shown only once", status=201)


@router.delete("/eab/{key_id}")
def revoke_eab(key_id: RowId, request: Request, session: UnitOfWork, actor: Writer) -> JSONResponse:
    return ok(eab_view(_admin(request, session, actor).revoke_eab(key_id)), "EAB key revoked")


@router.post("/renewal/{certificate_id}")
def mark_renewal(
    certificate_id: RowId, request: Request, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    marked = mark_for_renewal(repositories(session, actor), actor, certificate_id, now(request))
    message = "marked for early renewal" if marked else "already marked for early renewal"
    return ok({"certificate_id": certificate_id, "marked": True}, message)


@router.post("/proxy/register")
def proxy_register(body: ProxyRegisterBody, actor: Writer) -> JSONResponse:
    raise NotImplementedYet(
        "the Let's Encrypt proxy belongs to the ACME client work, which is not built yet"
    )
