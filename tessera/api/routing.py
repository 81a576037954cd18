"""Routers that tell at once that a path is not theirs.

FastAPI (0.165) tries the app's routes one by one, and each try costs about 10 us here
(its effective-route bookkeeping around every candidate), so a request for a route near the
end of the ~225 paid over a millisecond of CPU before its endpoint ran, and a 404 paid
for all of them (twice, with the trailing-slash retry). A `PrefixRouter` included with
`include` knows the path prefix all its routes share and answers "no match" for any other
path without trying them; what it does match is matched exactly as by FastAPI."""

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.routing import Match, get_route_path
from starlette.types import Scope


class PrefixRouter(APIRouter):
    """An APIRouter whose routes all lie under `reach` (the prefix it is included under plus
    its own), set by `include`; before that, or when it is included under two prefixes, it
    matches as any APIRouter."""

    reach: str | None = None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.reach and not get_route_path(scope).startswith(self.reach):
            return Match.NONE, {}
        return super().matches(scope)


def include(app: FastAPI, router: APIRouter, prefix: str = "", **options: Any) -> None:
    if isinstance(router, PrefixRouter):
        reach = prefix + router.prefix
        router.reach = reach if router.reach in (None, reach) else ""
    app.include_router(router, prefix=prefix, **options)
