"""SCEP over HTTP: /scep/pkiclient.exe (the default profile), /scep/{slug}/pkiclient.exe and
the alias /cgi-bin/pkiclient.exe. Unauthenticated, served on both the HTTPS app and the
plain-HTTP listener.

A plain ASGI middleware rather than FastAPI routes, like OCSP's (docs/ocsp.md): it sits inside
the security middleware (headers, CORS, rate limits, body limit) but ahead of routing, so a
SCEP request makes one thread hop and opens one session instead of going through the router,
dependency resolution and two hops. Every SCEP client makes three such requests per
enrollment. The operations themselves are in `operations.py`.
"""

import logging
import re

from fastapi import FastAPI
from sqlalchemy.exc import DataError, IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.api import errors
from tessera.core.errors import TesseraError
from tessera.domains.audit.context import SUCCESS_STATUS
from tessera.domains.scep.profiles import DEFAULT_SLUG
from tessera.protocols.scep import operations
from tessera.protocols.scep.operations import MAX_MESSAGE, Call, plain_error
from tessera.runtime import Runtime

log = logging.getLogger("tessera.scep")
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
        response = await self._respond(scope, receive, slug)
        await response(scope, receive, send)

    async def _respond(self, scope: Scope, receive: Receive, slug: str) -> Response:
        method = scope["method"]
        if method not in METHODS:
            return plain_error(405, "SCEP takes GET and POST")
        params = QueryParams(scope["query_string"])
        body = None
        if method == "POST":
            body = await _read_body(receive)
            if body is None:
                return plain_error(413, "message too large")
        headers = dict(scope["headers"])
        agent = headers.get(b"user-agent", b"").decode("latin-1")[:300] or None
        client = scope.get("client")
        call = Call(
            slug,
            params.get("operation", ""),
            params.get("message"),
            body,
            client[0] if client else None,
            agent,
        )
        return await run_in_threadpool(self._answer, call)

    def _answer(self, call: Call) -> Response:
        """One unit of work: committed when the operation returns, rolled back otherwise."""
        SUCCESS_STATUS.set(200)
        session = self.rt.sessions()
        try:
            response = operations.answer(self.rt, self.org_id, session, call, self.responders)
            session.commit()
            return response
        except TesseraError as exc:
            return plain_error(exc.status, exc.message)
        except IntegrityError as exc:
            # Two requests raced past a uniqueness check; the database kept one.
            log.info("SCEP integrity conflict: %s", exc.orig)
            return plain_error(409, "conflicts with an existing record; retry")
        except DataError as exc:
            log.warning("SCEP data error: %s", exc.orig)
            return plain_error(400, "a value is too long or out of range")
        except Exception:
            log.exception("SCEP %s failed", call.operation[:40])
            return plain_error(500, "internal error; see the server log")
        finally:
            session.close()


async def _read_body(receive: Receive) -> bytes | None:
    """The body, or None as soon as it exceeds what a SCEP message can be."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_MESSAGE:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
