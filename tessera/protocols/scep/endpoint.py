"""SCEP over HTTP: /scep/pkiclient.exe (the default profile), /scep/{slug}/pkiclient.exe and
the alias /cgi-bin/pkiclient.exe. Unauthenticated, served on both the HTTPS app and the
plain-HTTP listener.

A plain ASGI middleware rather than FastAPI routes, like OCSP's (docs/ocsp.md): it sits inside
the security middleware (headers, CORS, rate limits, body limit) but ahead of routing, so a
SCEP request makes one thread hop instead of going through the router, dependency resolution
and two hops; every SCEP client makes three such requests per enrollment. The whole unit of
work runs on that thread, with the app's own exception handlers for what fails
(`deps.in_lane_unit_of_work`; errors under /scep are plain text). The plain-HTTP listener
calls the endpoint through `public_lane`, ahead of most of the middleware. The operations
themselves are in `operations.py`.
"""

import re
from functools import partial

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.api import errors
from tessera.api.deps import in_lane_unit_of_work
from tessera.api.headers import BodyLimit, SecurityHeaders
from tessera.api.ratelimit import Limiter, RateLimit
from tessera.domains.scep.profiles import DEFAULT_SLUG
from tessera.protocols.body import read_body
from tessera.protocols.scep import operations
from tessera.protocols.scep.operations import MAX_MESSAGE, Call, plain_error
from tessera.runtime import Runtime

DEFAULT_PATHS = ("/scep/pkiclient.exe", "/cgi-bin/pkiclient.exe")
PROFILE_PATH = re.compile(r"^/scep/([^/]+)/pkiclient\.exe$")
# Often enough that a revoked RA (which answers nothing, see ProfileService.responder) is
# replaced within a minute; a profile whose RA is sound costs the job three row reads.
RA_RENEWAL_JOB, RA_RENEWAL_SECONDS = "scep-ra-renewal", 60.0
METHODS = ("GET", "HEAD", "POST")


def install(app: FastAPI, rt: Runtime) -> None:
    """Put the endpoint in front of the app's routes and register the RA renewal job."""
    app.state.scep_responders = operations.ResponderCache()
    app.add_middleware(
        ScepEndpoint,
        runtime=rt,
        org_id=app.state.default_org_id,
        responders=app.state.scep_responders,
    )
    for prefix in ("/scep", "/cgi-bin/pkiclient.exe"):  # other paths there: errors as text
        errors.FORMATTERS[prefix] = plain_error
    rt.jobs.every(RA_RENEWAL_JOB, RA_RENEWAL_SECONDS, lambda: operations.renew_ra_certificates(rt))


def public_lane(app: FastAPI, rt: Runtime, limiter: Limiter) -> ASGIApp:
    """SCEP as the plain-HTTP listener serves it (`app.public_only`), where every SCEP client
    goes: the endpoint behind the security headers (and the request id audit rows carry), the
    per-IP protocol rate limit and the body limit, but not the rest of the app's middleware
    (FastAPI's error and telemetry wrappers, CORS, the JSON check, the OCSP and issuance
    lanes), which means nothing to a SCEP client and cost ~10 % of an enrollment's CPU.
    A failure nobody handles is uvicorn's plain 500, as it is SCEP's."""
    endpoint = ScepEndpoint(
        _not_found, rt, app.state.default_org_id, responders=app.state.scep_responders
    )
    stack = SecurityHeaders(RateLimit(BodyLimit(endpoint, rt.settings.max_body_bytes), limiter, rt))

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app  # what Starlette would set: the error handlers are the app's
        await stack(scope, receive, send)

    return lane


def _not_allowed(message: str, allowed: tuple[str, ...]) -> Response:
    response = plain_error(405, message)
    response.headers["Allow"] = ", ".join(allowed)
    return response


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await plain_error(404, "not found")(scope, receive, send)


def scep_slug(scope: Scope) -> str | None:
    """The profile a request ScepEndpoint answers itself addresses; None for a request it
    passes on (no SCEP path, or a NUL that RejectNul refuses further in)."""
    slug = profile_slug(scope["path"]) if scope["type"] == "http" else None
    if slug is None or "\x00" in slug or b"%00" in scope["query_string"].upper():
        return None
    return slug


def profile_slug(path: str) -> str | None:
    """The SCEP profile a path addresses, or None when it is no SCEP path."""
    if path in DEFAULT_PATHS:
        return DEFAULT_SLUG
    found = PROFILE_PATH.match(path)
    return found.group(1) if found else None


class ScepEndpoint:
    """ASGI middleware: answers the SCEP paths, passes everything else on."""

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime,
        org_id: int,
        responders: operations.ResponderCache,
    ) -> None:
        self.app = app
        self.rt = runtime
        self.org_id = org_id
        self.responders = responders

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slug = scep_slug(scope)
        if slug is None:
            await self.app(scope, receive, send)
            return
        response = await self._respond(Request(scope, receive), slug)
        await response(scope, receive, send)

    async def _respond(self, request: Request, slug: str) -> Response:
        operation = request.query_params.get("operation", "")
        if request.method not in METHODS:
            return _not_allowed("SCEP takes GET and POST", METHODS)
        if request.method == "HEAD" and operation == "PKIOperation":
            # HEAD is safe (RFC 9110 9.2.1) and its answer has no body: it must not enroll
            # anyone, nor spend a challenge on an answer nobody can read.
            return _not_allowed("PKIOperation takes GET or POST", ("GET", "POST"))
        body = None
        if request.method == "POST":
            body = await read_body(request.scope, request.receive, MAX_MESSAGE)
            if body is None:
                return plain_error(413, "message too large")
        call = Call(
            slug,
            operation,
            request.query_params.get("message"),
            body,
            request.client.host if request.client else None,
            (request.headers.get("user-agent") or "")[:300] or None,
        )

        work = partial(operations.answer, self.rt, self.org_id, call=call, cache=self.responders)
        return await in_lane_unit_of_work(request, work)
