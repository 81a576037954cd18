"""SCEP over HTTP: /scep/pkiclient.exe (the default profile), /scep/{slug}/pkiclient.exe and
the alias /cgi-bin/pkiclient.exe. Unauthenticated, served on both the HTTPS app and the
plain-HTTP listener.

A plain ASGI middleware rather than FastAPI routes, like OCSP's (docs/ocsp.md): it sits inside
the security middleware (headers, CORS, rate limits, body limit) but ahead of routing, so a
SCEP request makes one thread hop instead of going through the router, dependency resolution
and two hops; every SCEP client makes three such requests per enrollment. It runs in the same
unit of work as an endpoint, with the app's own exception handlers
(`deps.within_unit_of_work`; errors under /scep are plain text). The operations themselves
are in `operations.py`.
"""

import re

from fastapi import FastAPI, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.api import errors
from tessera.api.deps import within_unit_of_work
from tessera.domains.scep.profiles import DEFAULT_SLUG
from tessera.protocols.body import read_body
from tessera.protocols.scep import operations
from tessera.protocols.scep.operations import MAX_MESSAGE, Call, plain_error
from tessera.runtime import Runtime

DEFAULT_PATHS = ("/scep/pkiclient.exe", "/cgi-bin/pkiclient.exe")
PROFILE_PATH = re.compile(r"^/scep/([^/]+)/pkiclient\.exe$")
RA_RENEWAL_JOB, RA_RENEWAL_SECONDS = "scep-ra-renewal", 3600.0
METHODS = ("GET", "HEAD", "POST")


def install(app: FastAPI, rt: Runtime) -> None:
    """Put the endpoint in front of the app's routes and register the RA renewal job."""
    app.add_middleware(ScepEndpoint, runtime=rt, org_id=app.state.default_org_id)
    for prefix in ("/scep", "/cgi-bin/pkiclient.exe"):  # other paths there: errors as text
        errors.FORMATTERS[prefix] = plain_error
    rt.jobs.every(RA_RENEWAL_JOB, RA_RENEWAL_SECONDS, lambda: operations.renew_ra_certificates(rt))


def profile_slug(path: str) -> str | None:
    """The SCEP profile a path addresses, or None when it is no SCEP path."""
    if path in DEFAULT_PATHS:
        return DEFAULT_SLUG
    found = PROFILE_PATH.match(path)
    return found.group(1) if found else None


class ScepEndpoint:
    """ASGI middleware: answers the SCEP paths, passes everything else on."""

    def __init__(self, app: ASGIApp, runtime: Runtime, org_id: int) -> None:
        self.app = app
        self.rt = runtime
        self.org_id = org_id
        self.responders = operations.ResponderCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slug = profile_slug(scope["path"]) if scope["type"] == "http" else None
        if slug is None or "\x00" in slug or b"%00" in scope["query_string"].upper():
            await self.app(scope, receive, send)  # not SCEP, or refused further in
            return
        response = await self._respond(Request(scope, receive), slug)
        await response(scope, receive, send)

    async def _respond(self, request: Request, slug: str) -> Response:
        if request.method not in METHODS:
            return plain_error(405, "SCEP takes GET and POST")
        body = None
        if request.method == "POST":
            body = await read_body(request.scope, request.receive, MAX_MESSAGE)
            if body is None:
                return plain_error(413, "message too large")
        call = Call(
            slug,
            request.query_params.get("operation", ""),
            request.query_params.get("message"),
            body,
            request.client.host if request.client else None,
            (request.headers.get("user-agent") or "")[:300] or None,
        )

        async def answer(session: Session) -> Response:
            rt, org_id, cache = self.rt, self.org_id, self.responders
            return await run_in_threadpool(operations.answer, rt, org_id, session, call, cache)

        return await within_unit_of_work(request, answer)
