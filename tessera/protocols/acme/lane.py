"""The signed ACME endpoints (every POST under /acme/) without FastAPI's routing and
dependency resolution: a plain ASGI middleware, inside AcmeHeaders (which adds Replay-Nonce
and the index link) and the security middleware, that calls the same endpoint functions
`routes.py` registers, with the same unit of work (`deps.unit_of_work`) and the app's own
exception handlers. Routing and dependency resolution cost an ACME request about as much as
its SQL; the endpoints stay registered with FastAPI for everything else (GETs, HEAD, other
methods, the OpenAPI description)."""

import re
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.api.deps import unit_of_work

Endpoint = Callable[..., Awaitable[Response]]
_unit_of_work = asynccontextmanager(unit_of_work)
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
        response = await _call(endpoint, parameters, request)
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


async def _call(endpoint: Endpoint, parameters: tuple[str, ...], request: Request) -> Response:
    """The endpoint inside its unit of work, which commits before the answer is sent (as
    FastAPI does with function-scoped dependencies) and rolls back on any error; errors are
    answered by the app's exception handlers, as if FastAPI had routed the request."""
    try:
        async with _unit_of_work(request) as session:
            return await endpoint(*parameters, request, session)
    except Exception as exc:  # noqa: BLE001 - FastAPI's boundary, answered by its handlers
        return await _handled(request, exc)


async def _handled(request: Request, exc: Exception) -> Response:
    handlers: dict[Any, Any] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            answer: Response = await handler(request, exc)
            return answer
    raise exc
