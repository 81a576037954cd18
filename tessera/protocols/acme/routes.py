"""The ACME server's public endpoints (RFC 8555, RFC 8737, RFC 9773, ACME profiles) under
/acme/. Thin: JWS and nonce checks in transport.py, the work in tessera/domains/acme."""

import re
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from tessera.api.deps import UnitOfWork, anonymous, in_lane_thread
from tessera.api.routing import PrefixRouter, include
from tessera.core.formats import load_certificate
from tessera.domains.acme import revocation
from tessera.domains.acme.accounts import Accounts, acme_actor
from tessera.domains.acme.orders import Orders
from tessera.domains.acme.renewal import RETRY_AFTER, find_certificate, suggested_window
from tessera.domains.acme.validation import ValidationConfig
from tessera.domains.acme.worker import CLEANUP_JOB, LEASE, VALIDATE_JOB, AcmeWorker, Attempt
from tessera.domains.certificates.service import CertificateService
from tessera.domains.issuance import Issuance
from tessera.protocols.acme import download, jws, views
from tessera.protocols.acme.lane import AcmeLane, Routes
from tessera.protocols.acme.problems import AcmeProblem, malformed, unauthorized
from tessera.protocols.acme.transport import (
    JWS_BODY,
    PREFIX,
    AcmeHeaders,
    base_url,
    by_account,
    by_jwk,
    purge_nonces,
    read_jws,
    spend_around,
)
from tessera.runtime import Runtime
from tessera.storage.models_acme import AcmeAccount
from tessera.storage.repositories import Repositories

router = PrefixRouter(prefix=PREFIX, tags=["Public: ACME"])
NONCE_PURGE_JOB = "acme-nonce-purge"
RETRY_PROCESSING = "2"
ORDERS_PAGE = 100  # orders per page of an account's orders list


def install(app: FastAPI, rt: Runtime) -> None:
    """Wire the ACME server: routes (the signed ones also through the lane, ahead of
    FastAPI's routing) and its background jobs; the response headers come with
    `install_headers`."""
    include(app, router)
    app.add_middleware(AcmeLane, routes=_lane_routes())
    settings = rt.settings
    config = ValidationConfig.parse(
        settings.acme_dns_servers,
        settings.acme_http01_port,
        settings.acme_tlsalpn01_port,
        settings.acme_validation_timeout,
    )
    worker = AcmeWorker(
        rt.sessions,
        rt.clock,
        config,
        _server_host(rt),
        settings.acme_insecure_always_valid,
        timedelta(seconds=settings.acme_retry_seconds),
    )
    app.state.acme_worker = worker
    rt.jobs.every(VALIDATE_JOB, 2.0, worker.validate_due)
    rt.jobs.every(CLEANUP_JOB, 300.0, worker.cleanup)
    if rt.acme_nonces is not None:
        rt.jobs.every(NONCE_PURGE_JOB, 300.0, partial(purge_nonces, rt))


def install_headers(app: FastAPI) -> None:
    """The ACME response headers, outside the middlewares that answer on their own (body
    limit, UTF-8 check), so that their answers under /acme/ carry them too; inside the rate
    limiter, whose refusals cost no nonce (docs/acme.md)."""
    app.add_middleware(AcmeHeaders)


def _hand_over(request: Request, attempt: Attempt) -> None:
    worker: AcmeWorker = request.app.state.acme_worker
    worker.hand_over(attempt)
    request.app.state.runtime.jobs.kick(VALIDATE_JOB)


def _server_host(rt: Runtime) -> str:
    """The host of the public URL: the CAA identity (validation.caa_identities) when the
    settings name none and it is a name, not an address."""
    from urllib.parse import urlsplit

    return urlsplit(rt.settings.https_base).hostname or "localhost"


class Ctx:
    """One ACME request's unit of work."""

    def __init__(self, request: Request, session: Session) -> None:
        self.rt: Runtime = request.app.state.runtime
        self.actor = acme_actor(anonymous(request), None)
        self.repos = Repositories(session, self.actor.org_id)
        self.now = self.rt.clock()
        self.urls = views.Urls(base_url(self.rt))
        if not self.repos.acme.settings().enabled:
            raise AcmeProblem("serverInternal", "the ACME server is disabled", 503)

    def issuance(self, account_id: int | None) -> Issuance:
        actor = acme_actor(self.actor, account_id)
        rt = self.rt
        return Issuance(self.repos, rt.authority, rt.keys, rt.publication, actor, rt.serials)

    def orders(self, account: AcmeAccount) -> Orders:
        return Orders(self.issuance(account.id), self.now)

    def accounts(self) -> Accounts:
        return Accounts(self.repos, self.actor, self.rt.keys, self.now, self.urls.base)


def _json(
    body: Any,
    status: int = 200,
    location: str | None = None,
    links: list[str] | None = None,
    retry_after: str | None = None,
) -> JSONResponse:
    response = JSONResponse(body, status_code=status)
    if location:
        response.headers["Location"] = location
    for link in links or []:
        response.headers.append("Link", link)
    if retry_after:
        response.headers["Retry-After"] = retry_after
    return response


async def _signed(
    request: Request, session: Session, path: str, work: Callable[[Ctx, jws.Jws], Response]
) -> Response:
    signed = await read_jws(request, path)

    def spend_and_work() -> Response:
        rt = request.app.state.runtime
        return spend_around(rt, session, signed, lambda: work(Ctx(request, session), signed))

    return await in_lane_thread(spend_and_work)


def _id(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # isdigit alone takes "²"
        raise AcmeProblem("malformed", f"no such {what}", 404)
    return int(text)


@router.get("/directory")
def directory(request: Request, session: UnitOfWork) -> JSONResponse:
    return _directory(Ctx(request, session))


def _directory(ctx: Ctx) -> JSONResponse:
    return _json(views.directory(ctx.urls, ctx.repos.acme.settings(), _server_host(ctx.rt)))


@router.head("/new-nonce")
def nonce_head() -> Response:
    return Response(status_code=200)


@router.get("/new-nonce")
def nonce_get() -> Response:
    return Response(status_code=204)


# RFC 8555 6.3: the directory and new-nonce take POST-as-GET as well as GET.
@router.post("/directory", openapi_extra=JWS_BODY)
async def directory_post(request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        _post_as_get(ctx, signed)
        return _directory(ctx)

    return await _signed(request, session, "directory", work)


@router.post("/new-nonce", openapi_extra=JWS_BODY)
async def nonce_post(request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        _post_as_get(ctx, signed)
        return Response(status_code=204)

    return await _signed(request, session, "new-nonce", work)


def _post_as_get(ctx: Ctx, signed: jws.Jws) -> AcmeAccount:
    """A POST-as-GET (RFC 8555 6.3): signed by an account (kid), with an empty payload. A
    resource that is only ever fetched (the directory, an order, a certificate) has no
    meaning for a JSON payload: one is refused, not taken for a fetch."""
    account = by_account(ctx.repos, ctx.rt, signed)
    if signed.payload:
        raise malformed("a POST-as-GET request has an empty payload")
    return account


@router.post("/new-account", openapi_extra=JWS_BODY)
async def new_account(request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        jwk = by_jwk(signed)
        payload = signed.json_payload()
        account, created = ctx.accounts().new_account(jwk, payload, signed.url)  # type: ignore[arg-type]
        body = views.account(ctx.urls, account)
        if created and "externalAccountBinding" in payload:
            # RFC 8555 7.3.4: "MUST include ... the same value as the field in the request"
            body["externalAccountBinding"] = payload["externalAccountBinding"]
        return _json(body, 201 if created else 200, ctx.urls.account(account.id))

    return await _signed(request, session, "new-account", work)


@router.post("/acct/{account_id}", openapi_extra=JWS_BODY)
async def account(account_id: str, request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = by_account(ctx.repos, ctx.rt, signed)
        if account.id != _id(account_id, "account"):
            raise unauthorized("the kid is not this account")
        if signed.payload:
            ctx.accounts().update(account, signed.json_payload())
        return _json(views.account(ctx.urls, account), location=ctx.urls.account(account.id))

    return await _signed(request, session, f"acct/{account_id}", work)


@router.post("/acct/{account_id}/orders", openapi_extra=JWS_BODY)
async def account_orders(account_id: str, request: Request, session: UnitOfWork) -> Response:
    # RFC 8555 7.1.2.1: a page of the list, newest first, and a Link rel="next" to the rest.
    # The cursor is the last order id of the previous page; the JWS url is the URL with it.
    query = request.scope.get("query_string", b"").decode("latin-1")
    cursor = request.query_params.get("cursor")

    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = _post_as_get(ctx, signed)
        if account.id != _id(account_id, "account"):
            raise unauthorized("the kid is not this account")
        before = None if cursor is None else _cursor(cursor)
        ids = ctx.repos.acme.account_order_ids(account.id, ctx.now, ORDERS_PAGE + 1, before)
        page = ids[:ORDERS_PAGE]
        links = []
        if len(ids) > ORDERS_PAGE:
            listing = ctx.urls("acct", account.id, "orders")
            links.append(f'<{listing}?cursor={page[-1]}>;rel="next"')
        return _json({"orders": [ctx.urls("order", i) for i in page]}, links=links)

    path = f"acct/{account_id}/orders" + (f"?{query}" if query else "")
    return await _signed(request, session, path, work)


def _cursor(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise malformed("cursor must be an order id from a next link")
    return int(text)


@router.post("/key-change", openapi_extra=JWS_BODY)
async def key_change(request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = by_account(ctx.repos, ctx.rt, signed)
        ctx.accounts().key_change(account, str(signed.url), signed.json_payload())
        return _json(views.account(ctx.urls, account), location=ctx.urls.account(account.id))

    return await _signed(request, session, "key-change", work)


@router.post("/new-order", openapi_extra=JWS_BODY)
async def new_order(request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = by_account(ctx.repos, ctx.rt, signed)
        order = ctx.orders(account).new_order(account, signed.json_payload())
        body = views.order(ctx.urls, ctx.repos, order)
        return _json(body, 201, ctx.urls("order", order.id))

    return await _signed(request, session, "new-order", work)


@router.post("/order/{order_id}", openapi_extra=JWS_BODY)
async def get_order(order_id: str, request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = _post_as_get(ctx, signed)
        orders = ctx.orders(account)
        order = orders.refresh(orders.order(account, _id(order_id, "order")))
        retry = RETRY_PROCESSING if order.status in ("processing", "pending") else None
        return _json(views.order(ctx.urls, ctx.repos, order), retry_after=retry)

    return await _signed(request, session, f"order/{order_id}", work)


@router.post("/order/{order_id}/finalize", openapi_extra=JWS_BODY)
async def finalize(order_id: str, request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = by_account(ctx.repos, ctx.rt, signed)
        orders = ctx.orders(account)
        order = orders.order(account, _id(order_id, "order"))
        issued = orders.finalize(account, order, signed.json_payload())
        location = ctx.urls("order", order.id)
        retry = None if issued else RETRY_PROCESSING
        return _json(views.order(ctx.urls, ctx.repos, order), location=location, retry_after=retry)

    return await _signed(request, session, f"order/{order_id}/finalize", work)


@router.post("/authz/{authz_id}", openapi_extra=JWS_BODY)
async def authorization(authz_id: str, request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = by_account(ctx.repos, ctx.rt, signed)
        orders = ctx.orders(account)
        authz = orders.authorization(account, _id(authz_id, "authorization"))
        if signed.payload:
            payload = signed.json_payload()
            if payload.get("status") != "deactivated":
                raise malformed("the only change to an authorization is status: deactivated")
            orders.deactivate(account, authz)
        retry = RETRY_PROCESSING if authz.status == "pending" else None
        return _json(views.authorization(ctx.urls, ctx.repos, authz), retry_after=retry)

    return await _signed(request, session, f"authz/{authz_id}", work)


@router.post("/chall/{challenge_id}", openapi_extra=JWS_BODY)
async def challenge(challenge_id: str, request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = by_account(ctx.repos, ctx.rt, signed)
        orders = ctx.orders(account)
        if signed.payload:
            signed.json_payload()  # RFC 8555 7.5.1: "{}" says "ready"; anything JSON is fine
            found, authz, handed = orders.respond(account, _id(challenge_id, "challenge"), LEASE)
            if handed:
                worker: AcmeWorker = request.app.state.acme_worker
                queued.append(worker.attempt_for(found, authz, account, ctx.repos.acme.settings()))
        else:
            found, authz = orders.challenge_view(account, _id(challenge_id, "challenge"))
        up = f'<{ctx.urls("authz", authz.id)}>;rel="up"'
        retry = RETRY_PROCESSING if found.status == "processing" else None
        return _json(views.challenge(ctx.urls, found), links=[up], retry_after=retry)

    queued: list[Attempt] = []
    response = await _signed(request, session, f"chall/{challenge_id}", work)
    for attempt in queued:
        # `spend_around` committed the claim before returning: this process's job validates
        # it next, while the answer is sent (when it cannot, the lease runs out).
        _hand_over(request, attempt)
    return response


@router.post("/cert/{cert_id}", openapi_extra=JWS_BODY)
async def certificate(cert_id: str, request: Request, session: UnitOfWork) -> Response:
    return await _certificate(cert_id, 0, request, session)


@router.post("/cert/{cert_id}/{alternate}", openapi_extra=JWS_BODY)
async def certificate_alternate(
    cert_id: str, alternate: str, request: Request, session: UnitOfWork
) -> Response:
    return await _certificate(cert_id, 1 if alternate == "1" else -1, request, session)


async def _certificate(cert_id: str, variant: int, request: Request, session: Session) -> Response:
    path = f"cert/{cert_id}" + (f"/{variant}" if variant else "")
    media = download.negotiate(request.headers.get("accept"))

    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        account = _post_as_get(ctx, signed)
        cid = _id(cert_id, "certificate")
        order = ctx.repos.acme.order_for_certificate(cid)
        if order is None or variant < 0:
            raise AcmeProblem("malformed", "no such certificate", 404)
        if order.account_id != account.id:
            raise unauthorized("this certificate was ordered by another account")
        service = CertificateService(ctx.issuance(account.id), ctx.now)
        cert = service.get(cid)
        chain = service.issuer_chain(cert)
        # The default chain runs up to the root (some clients, certbot among them, want at
        # least one issuer even when a root signs directly); the alternate chain stops
        # below the self-signed root, which relying parties already hold.
        short = [c for c in chain if c.issuer != c.subject]
        leaf = load_certificate(cert.certificate_pem.encode())
        body, content_type = download.representation(media, leaf, short if variant == 1 else chain)
        response = Response(body, media_type=content_type)
        if short and len(short) < len(chain):
            other = ctx.urls("cert", cid, 1) if variant == 0 else ctx.urls("cert", cid)
            response.headers.append("Link", f'<{other}>;rel="alternate"')
        issuer = ctx.repos.cas.get(cert.ca_id) if cert.ca_id is not None else None
        if media == download.PKIX_CERT and issuer is not None:
            # RFC 8555 7.4.2: a format that holds one certificate SHOULD link to its issuer.
            up = ctx.rt.publication.for_ca(issuer).ca_issuers
            response.headers.append("Link", f'<{up}>;rel="up"')
        return response

    return await _signed(request, session, path, work)


@router.post("/revoke-cert", openapi_extra=JWS_BODY)
async def revoke(request: Request, session: UnitOfWork) -> Response:
    def work(ctx: Ctx, signed: jws.Jws) -> Response:
        # The signature first (RFC 8555 6.2): nothing is looked up for an unverified request.
        account = by_account(ctx.repos, ctx.rt, signed) if signed.kid is not None else None
        jwk = by_jwk(signed) if account is None else None
        payload = signed.json_payload()
        cert = revocation.target(ctx.repos, payload.get("certificate"))
        reason = revocation.reason(payload.get("reason", 0))
        if account is not None:
            revocation.check_account(ctx.repos, account, cert, ctx.now)
        elif jwk is not None:
            revocation.check_key(jwk, cert)
        service = CertificateService(ctx.issuance(account.id if account else None), ctx.now)
        revocation.revoke(service, cert, reason)
        return Response(status_code=200)

    return await _signed(request, session, "revoke-cert", work)


@router.get("/renewalInfo/{certid}")
def renewal_info(certid: str, request: Request, session: UnitOfWork) -> JSONResponse:
    ctx = Ctx(request, session)
    cert = find_certificate(ctx.repos, certid)
    window = suggested_window(ctx.repos, cert, ctx.now)
    body: dict[str, Any] = {
        "suggestedWindow": {
            "start": views.rfc3339(window.start),
            "end": views.rfc3339(window.end),
        }
    }
    # RFC 9773 4.2: "a page which may explain" the window; the directory explains nothing, so
    # only the operator's website, when set, is offered.
    website = ctx.repos.acme.settings().website
    if window.reason and website:
        body["explanationURL"] = website
    retry = str(int(RETRY_AFTER / timedelta(seconds=1)))
    return _json(body, retry_after=retry)


def _lane_routes() -> Routes:
    """Every POST endpoint above, by its path under /acme/ (one `[^/]+` per parameter)."""
    one = "([^/]+)"
    routes: list[tuple[str, Any]] = [
        ("directory", directory_post),
        ("new-nonce", nonce_post),
        ("new-account", new_account),
        (f"acct/{one}", account),
        (f"acct/{one}/orders", account_orders),
        ("key-change", key_change),
        ("new-order", new_order),
        (f"order/{one}", get_order),
        (f"order/{one}/finalize", finalize),
        (f"authz/{one}", authorization),
        (f"chall/{one}", challenge),
        (f"cert/{one}", certificate),
        (f"cert/{one}/{one}", certificate_alternate),
        ("revoke-cert", revoke),
    ]
    return [(re.compile(f"{re.escape(PREFIX)}/{path}"), endpoint) for path, endpoint in routes]
