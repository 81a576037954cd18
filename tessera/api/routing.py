"""Routers that tell at once that a path is not theirs, and whose fixed paths are never
taken for a path parameter.

FastAPI (0.165) tries the app's routes one by one, and each try costs about 10 us here
(its effective-route bookkeeping around every candidate), so a request for a route near the
end of the ~225 paid over a millisecond of CPU before its endpoint ran, and a 404 paid
for all of them (twice, with the trailing-slash retry). A `PrefixRouter` included with
`include` knows the path prefix all its routes share and answers "no match" for any other
path without trying them; what it does match is matched exactly as by FastAPI, but for the
two rules below (docs/routing.md)."""

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match, get_route_path
from starlette.types import Receive, Scope, Send

HEAD_AS_GET = "tessera.head_as_get"  # a scope's mark: this GET answers a HEAD


class Route(APIRoute):
    """A route of a `PrefixRouter`. Its 405 names every method of its path, not only its
    own: Starlette answers with the first route whose path matched, so `POST /cas/5` said
    `Allow: GET` although PATCH and DELETE are there too. (`handle` runs once per request;
    `matches`, run for every route tried, is FastAPI's own.)"""

    allow: str | None = None  # set by `PrefixRouter.link`

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow and "app" in scope and scope["method"] not in (self.methods or ()):
            raise HTTPException(status_code=405, headers={"Allow": self.allow})
        await super().handle(scope, receive, send)


class PrefixRouter(APIRouter):
    """An APIRouter whose routes all lie under `reach` (the prefix it is included under plus
    its own), set by `include`; before that, or when it is included under two prefixes, it
    matches as any APIRouter.

    A fixed path of its own (`/api/v2/truststore/sync`, POST) is never a path parameter of
    a sibling (`GET /api/v2/truststore/{cert_id}`): Starlette takes the first route that
    matches path and method, and keeps one that matches the path alone only for a 405, so
    `GET .../sync` went to the id route and its parser answered 422. Here a method the fixed
    path does not take is its 405, with its methods in `Allow`. The check is one dictionary
    lookup per router tried, not a Python call around every route tried."""

    reach: str | None = None

    def __init__(self, **options: Any) -> None:
        super().__init__(**{"route_class": Route, **options})
        self.fixed: dict[str, frozenset[str]] = {}  # full path -> methods, set by `link`

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = get_route_path(scope)
        if self.reach and not path.startswith(self.reach):
            return Match.NONE, {}
        if self._not_allowed(scope, path) is not None:
            return Match.PARTIAL, {}  # the path is ours; another router may still take it
        match, child = super().matches(scope)
        if match is Match.PARTIAL and scope["method"] == "HEAD":
            return super().matches(_as_get(scope))
        return match, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = self._not_allowed(scope, get_route_path(scope))
        if allowed is not None:
            raise HTTPException(status_code=405, headers={"Allow": allow_header(allowed)})
        if scope["method"] == "HEAD" and super().matches(scope)[0] is not Match.FULL:
            # No route of the path takes HEAD itself (ACME's new-nonce, the health checks
            # and the CRLs do): it is that path's GET, whose body the server leaves out.
            await super().handle(_as_get(scope), receive, send)
            return
        await super().handle(scope, receive, send)

    def _not_allowed(self, scope: Scope, path: str) -> frozenset[str] | None:
        """The methods of the fixed path `path` when the request's is not among them (HEAD
        is among them with GET)."""
        allowed = self.fixed.get(path)
        if allowed is None or scope["type"] != "http" or scope["method"] in allowed:
            return None
        if scope["method"] == "HEAD" and "GET" in allowed:
            return None
        return allowed

    def link(self, prefix: str) -> None:
        """Record the fixed paths under `prefix` (one included twice has both sets) and
        tell each route every method of its path."""
        routes = [r for r in self.routes if isinstance(r, APIRoute)]
        methods: dict[str, set[str]] = {}
        for route in routes:
            methods.setdefault(route.path, set()).update(route.methods or ())
        for route in routes:
            if isinstance(route, Route):
                route.allow = allow_header(methods[route.path])
            if not route.param_convertors:
                self.fixed[prefix + route.path] = frozenset(methods[route.path])


def allow_header(methods: Iterable[str]) -> str:
    """A 405's `Allow`: the methods the resource takes (RFC 9110 10.2.1), HEAD among them
    wherever GET is, since HEAD answers as GET there."""
    methods = set(methods)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def answers_head(request: Request) -> bool:
    """Whether this GET is a HEAD's (`_as_get`): its body is never sent, so an endpoint whose
    GET records that something left the server (a key export's audit row) records nothing."""
    return bool(request.scope.get(HEAD_AS_GET))


def _as_get(scope: Scope) -> Scope:
    """A HEAD request's scope as its GET's. FastAPI's routes, unlike Starlette's, do not take
    HEAD with GET, but RFC 9110 9.3.2 has every GET resource answer HEAD alike: same status
    and headers (the GET body's Content-Length), no body. The server (uvicorn) leaves the
    body out, since its own scope still says HEAD; the routes and their handlers see GET.
    Only the method differs, and the mark `answers_head` reads: `state` and FastAPI's
    bookkeeping are the same objects."""
    return {**scope, "method": "GET", HEAD_AS_GET: True}


def include(app: FastAPI, router: APIRouter, prefix: str = "", **options: Any) -> None:
    if isinstance(router, PrefixRouter):
        reach = prefix + router.prefix
        router.reach = reach if router.reach in (None, reach) else ""
        router.link(prefix)
    app.include_router(router, prefix=prefix, **options)
