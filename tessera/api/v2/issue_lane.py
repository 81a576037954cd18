"""`POST /api/v2/certificates` without FastAPI's routing, request parsing and dependency
resolution: a plain ASGI middleware (inside the security middleware, like the ACME and SCEP
lanes) that validates the body with the route's own model and calls the route's own function
(`certificates.issue_certificate`) on a lane thread (`deps.in_lane_thread`, two per
process), after the same authentication and permission check, in the same unit of work and
with the app's exception handlers (`deps.within_unit_of_work`). On the FastAPI path the same
request takes two hops to anyio's threads (the actor, then the endpoint) and resolves four
dependencies; see docs/request-path-performance.md.

Only a well-formed JSON body is answered here. Anything else (another content type, a body
the model refuses, a trailing slash) goes on to FastAPI with its body replayed, so an error
is answered exactly as on every other route."""

from fastapi import Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.api.deps import current_actor, in_lane_thread, within_unit_of_work
from tessera.api.v2.certificates import ISSUE_STATUS, WRITER, issue_certificate
from tessera.api.v2.schemas import IssueCertificate

PATH = "/api/v2/certificates"


class IssuanceLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_issuance(scope):
            await self.app(scope, receive, send)
            return
        body = await Request(scope, receive).body()
        replay = _replaying(body, receive)
        try:
            spec = IssueCertificate.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replay, send)
            return
        request = Request(scope, replay)

        async def work(session: Session) -> Response:
            return await in_lane_thread(_issue, request, spec, session)

        response = await within_unit_of_work(request, work, success_status=ISSUE_STATUS)
        await response(scope, receive, send)


def _issue(request: Request, spec: IssueCertificate, session: Session) -> Response:
    actor = WRITER.check(current_actor(request, session))
    return issue_certificate(request, spec, session, actor)


def _is_issuance(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body over once, then waits on the real one (for
    a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
