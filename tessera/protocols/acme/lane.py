"""The signed ACME endpoints (every POST under /acme/) without FastAPI's routing and
dependency resolution: a plain ASGI middleware, inside AcmeHeaders (which adds Replay-Nonce
and the index link) and the security middleware, that calls the same endpoint functions
`routes.py` registers, in the same unit of work and with the app's own exception handlers
(`deps.within_unit_of_work`). Routing and dependency resolution cost a signed request about
as much as its SQL; the endpoints stay registered with FastAPI for everything else (GETs,
HEAD, other methods, the OpenAPI description)."""

import re
from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.api.deps import within_unit_of_work

Endpoint = Callable[..., Awaitable[Response]]
# (path pattern, endpoint): the pattern's groups are the endpoint's path parameters, in order,
# followed by the request and its session.
Routes = list[tuple[re.Pattern[str], Endpoint]]


class AcmeLane:
    def __init__(self, app: ASGIApp, routes: Routes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _match(self.routes, scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, parameters = found
        request = Request(scope, receive)
        response = await within_unit_of_work(request, partial(endpoint, *parameters, request))
        await response(scope, receive, send)


def _match(routes: Routes, scope: Scope) -> tuple[Endpoint, tuple[str, ...]] | None:
    if scope["method"] != "POST":
        return None
    path = scope["path"]
    for pattern, endpoint in routes:
        matched = pattern.fullmatch(path)
        if matched:
            return endpoint, matched.groups()
    return None
