"""The one wiring point: settings -> storage -> core -> adapters -> ASGI app."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera import __version__
from tessera.api import errors, headers, health, ratelimit
from tessera.api.routing import include
from tessera.api.v1 import audit as audit_v1
from tessera.api.v2 import (
    account,
    auth,
    cas,
    certificates,
    csrs,
    dashboard,
    groups,
    imports,
    issue_lane,
    mail_settings,
    rbac,
    search,
    system_security,
    templates,
    tools,
    truststore,
    users,
)
from tessera.api.v2 import acme as acme_api
from tessera.api.v2 import audit as audit_api
from tessera.api.v2 import crl as crl_api
from tessera.api.v2 import ocsp as ocsp_api
from tessera.api.v2 import scep as scep_api
from tessera.config import Settings
from tessera.domains import tally
from tessera.domains.audit import service as audit_service
from tessera.domains.identity.account import PURGE_JOB, PURGE_SECONDS, purge_expired
from tessera.domains.search import trigrams
from tessera.protocols import aia, crl, ocsp
from tessera.protocols.acme import routes as acme_protocol
from tessera.protocols.scep import endpoint as scep_protocol
from tessera.runtime import Runtime, build_runtime
from tessera.storage import sqlite_writes
from tessera.storage.repositories.identity import OrganizationRepository

# What the plain-HTTP listener serves: only what relying parties fetch without TLS.
PUBLIC_PREFIXES = ("/cdp/", "/ca/", "/ocsp", "/scep", "/cgi-bin/pkiclient.exe")


SERIAL_POOL_JOB = "serial-pool"


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    rt = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.jobs.start()
        yield
        await rt.jobs.stop()
        rt.engine.dispose()

    app = FastAPI(
        title="Tessera",
        version=__version__,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(RejectNul)
    app.state.runtime = rt
    rt.jobs.every(
        "certificate-tally", tally.FOLD_SECONDS, partial(tally.fold_certificate_tally, rt.sessions)
    )
    rt.jobs.every(SERIAL_POOL_JOB, 60.0, rt.serials.refill)
    if rt.engine.dialect.name == "sqlite":
        refresh = partial(trigrams.refresh_trigram_stats, rt.sessions)
        rt.jobs.every(trigrams.JOB, trigrams.REFRESH_SECONDS, refresh)
        # the runtime's engine leaves WAL checkpoints to this job (storage/sqlite_writes.py)
        rt.jobs.every("sqlite-checkpoint", 1.0, partial(sqlite_writes.checkpoint, rt.engine))
    rt.serials.wanted = partial(rt.jobs.kick, SERIAL_POOL_JOB)
    app.state.default_org_id = _default_org_id(rt)
    errors.install(app)
    # FastAPI tries routes one by one in this order (about 10 us each on this hardware); a
    # router included with `include` turns away a path outside its prefix without trying its
    # routes (docs/routing.md). The protocol endpoints that clients call in bulk (ACME under
    # /acme/, CRLs under /cdp/, CA certificates under /ca/), the health checks and
    # certificate issuance come first. No path of theirs overlaps one registered later.
    # SCEP (like OCSP below) is plain ASGI ahead of routing.
    acme_protocol.install(app, rt)
    scep_protocol.install(app, rt)
    include(app, crl.router)  # the distribution points; publication is wired below
    include(app, aia.router)
    include(app, health.router())
    include(app, certificates.router, prefix="/api/v2")
    app.add_middleware(issue_lane.IssuanceLane)  # issuance ahead of routing, as ACME's
    for router in (
        auth,
        account,
        cas,
        csrs,
        templates,
        truststore,
        users,
        rbac,
        dashboard,
        search,
        imports,
        tools,
    ):
        include(app, router.router, prefix="/api/v2")
    # Accounts: user groups, the email settings, and purging expired sessions and tokens.
    include(app, groups.router, prefix="/api/v2")
    include(app, mail_settings.router, prefix="/api/v2")
    rt.jobs.every(PURGE_JOB, PURGE_SECONDS, partial(purge_expired, rt.sessions, rt.clock))
    # ACME and SCEP management APIs (their protocols are installed above).
    include(app, acme_api.router, prefix="/api/v2")
    include(app, scep_api.router, prefix="/api/v2")
    # CRLs: management API, the distribution points under /cdp/ and the publishing job.
    include(app, crl_api.router, prefix="/api/v2")
    crl.install(app, rt)
    include(app, ocsp_api.router, prefix="/api/v2")
    ocsp.install(app, rt)  # plain ASGI in front of the app: the hot path skips FastAPI
    # Audit: logs, retention and syslog (v2), the platform dialect (v1), request ids in rows.
    include(app, audit_api.router, prefix="/api/v2")
    include(app, audit_api.system_router, prefix="/api/v2")
    include(app, audit_v1.router, prefix="/api/v1")
    rt.jobs.every("audit-retention", 3600, audit_service.retention_job(rt.sessions, rt.clock))
    # Security, added last so it is outermost: body limit, rate limits, CORS and headers.
    include(app, system_security.router, prefix="/api/v2")
    system_security.install_jobs(rt)
    headers.install_body_limit(app, settings)
    acme_protocol.install_headers(app)
    limiter = ratelimit.install(app, rt)
    headers.install(app, settings)
    app.state.scep_lane = scep_protocol.public_lane(app, rt, limiter)
    return app


class RejectNul:
    """No path or query parameter needs a NUL, and PostgreSQL text cannot store one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope["query_string"].upper()
        ):
            message = "NUL characters are not allowed in URLs"
            response = headers.dialect_error(scope["path"], 400, message)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _default_org_id(rt: Runtime) -> int:
    with rt.sessions() as session:
        org = OrganizationRepository(session).default()
        if org is None:
            raise RuntimeError("the database has no default organization; run `tessera init`")
        return org.id


def public_only(app: ASGIApp) -> ASGIApp:
    """The plain-HTTP listener's view of the app: protocol endpoints, nothing else."""
    # OCSP, the hottest public endpoint, takes its own lane here: no API middleware (see
    # docs/ocsp.md); everything else it does not answer goes on to the app.
    state = getattr(app, "state", None)
    ocsp_lane = getattr(state, "ocsp_lane", None)
    # SCEP too, behind the few middlewares that matter to it (protocols/scep/endpoint.py).
    scep_lane = getattr(state, "scep_lane", None)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(PUBLIC_PREFIXES):
            await NOT_HERE(scope, receive, send)
            return
        if ocsp_lane is not None and scope["type"] == "http" and scope["path"].startswith("/ocsp"):
            await ocsp_lane(scope, receive, send)
            return
        if scep_lane is not None and scep_protocol.scep_slug(scope) is not None:
            await scep_lane(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


async def _not_here(scope: Scope, receive: Receive, send: Send) -> None:
    body = b'{"error":true,"code":404,"message":"not served over plain HTTP; use HTTPS"}'
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# With the headers every other answer carries (X-API-Version, nosniff, CSP...).
NOT_HERE = headers.SecurityHeaders(_not_here)
