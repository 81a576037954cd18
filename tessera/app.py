"""The one wiring point: settings -> storage -> core -> adapters -> ASGI app."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera import __version__
from tessera.api import errors, health
from tessera.api.v2 import (
    account,
    auth,
    cas,
    certificates,
    csrs,
    dashboard,
    imports,
    rbac,
    search,
    templates,
    tools,
    truststore,
    users,
)
from tessera.config import Settings
from tessera.domains import tally
from tessera.protocols import aia
from tessera.runtime import Runtime, build_runtime
from tessera.storage.repositories.identity import OrganizationRepository

# What the plain-HTTP listener serves: only what relying parties fetch without TLS.
PUBLIC_PREFIXES = ("/cdp/", "/ca/", "/ocsp", "/scep", "/cgi-bin/pkiclient.exe")


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
    app.state.default_org_id = _default_org_id(rt)
    errors.install(app)
    for router in (
        auth,
        account,
        cas,
        certificates,
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
        app.include_router(router.router, prefix="/api/v2")
    app.include_router(health.router())
    app.include_router(aia.router)
    return app


class RejectNul:
    """No path or query parameter needs a NUL, and PostgreSQL text cannot store one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope["query_string"].upper()
        ):
            response = errors.v2_error(400, "NUL characters are not allowed in URLs")
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

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(PUBLIC_PREFIXES):
            await _not_here(send)
            return
        await app(scope, receive, send)

    return guarded


async def _not_here(send: Send) -> None:
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
