"""PrefixRouter (tessera/api/routing.py) turns away paths outside its prefix without trying
its routes; everything it does match must be answered exactly as by FastAPI's own APIRouter:
path parameters, 405 for another method, the trailing-slash redirect, 404, a prefix that is a
prefix of another router's, a router without a prefix of its own, one included twice. Except
for its two rules: a path parameter never takes a fixed path, and a 405 names every method of
its path (the last test)."""

import asyncio
from collections.abc import Callable

import httpx
from fastapi import APIRouter, FastAPI
from starlette.routing import Match

from tessera.api.routing import PrefixRouter, include

REQUESTS = [
    ("GET", "/api/items"),
    ("GET", "/api/items/"),
    ("GET", "/api/items/5"),
    ("GET", "/api/items/five"),
    ("POST", "/api/items/5"),
    ("POST", "/api/items/5/do"),
    ("GET", "/api/items-archive/7"),
    ("GET", "/api/items-archive"),
    ("GET", "/api/stats"),
    ("GET", "/api/stats/"),
    ("GET", "/health"),
    ("PUT", "/health"),
    ("GET", "/v1/twice/3"),
    ("GET", "/v2/twice/3"),
    ("GET", "/nothing"),
    ("GET", "/api/nothing"),
    ("GET", "/"),
]


def build(router_class: Callable[..., APIRouter]) -> FastAPI:
    app = FastAPI()
    items = router_class(prefix="/items")
    items.add_api_route("", lambda: {"all": True}, methods=["GET"])
    items.add_api_route("/{item_id}", lambda item_id: {"id": item_id}, methods=["GET"])
    items.add_api_route("/{item_id}/do", lambda item_id: {"done": item_id}, methods=["POST"])
    archive = router_class(prefix="/items-archive")
    archive.add_api_route("/{item_id}", lambda item_id: {"old": item_id}, methods=["GET"])
    unprefixed = router_class()
    unprefixed.add_api_route("/stats", lambda: {"stats": 1}, methods=["GET"])
    health = router_class()
    health.add_api_route("/health", lambda: {"ok": True}, methods=["GET"])
    twice = router_class(prefix="/twice")
    twice.add_api_route("/{n}", lambda n: {"n": n}, methods=["GET"])
    include(app, health)
    include(app, items, prefix="/api")
    include(app, archive, prefix="/api")
    include(app, unprefixed, prefix="/api")
    include(app, twice, prefix="/v1")
    include(app, twice, prefix="/v2")
    return app


async def answers(app: FastAPI) -> list[tuple[int, str | None, str]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        found = []
        for method, path in REQUESTS:
            response = await client.request(method, path, follow_redirects=False)
            found.append((response.status_code, response.headers.get("location"), response.text))
        return found


def test_answers_as_fastapis_own_router() -> None:
    plain = asyncio.run(answers(build(APIRouter)))
    prefixed = asyncio.run(answers(build(PrefixRouter)))
    for request, expected, got in zip(REQUESTS, plain, prefixed, strict=True):
        assert got == expected, request


def test_a_path_outside_the_reach_is_turned_away_untried() -> None:
    app = FastAPI()
    items = PrefixRouter(prefix="/items")
    items.add_api_route("/{item_id}", lambda item_id: item_id, methods=["GET"])
    twice = PrefixRouter(prefix="/twice")
    include(app, items, prefix="/api")
    include(app, twice, prefix="/v1")
    include(app, twice, prefix="/v2")
    assert items.reach == "/api/items"
    assert items.matches({"type": "http", "path": "/health", "root_path": ""}) == (Match.NONE, {})
    assert twice.reach == ""  # no single prefix: it matches as any APIRouter


def test_a_fixed_path_is_never_a_path_parameter() -> None:
    """`GET /things/sync` (POST-only) went to `GET /things/{thing_id}`, whose id parser
    answered 422; it is that path's 405. And `Allow` lists every method of the path."""
    app = FastAPI()
    things = PrefixRouter(prefix="/things")
    things.add_api_route("", lambda: "listed", methods=["GET"])
    things.add_api_route("", lambda: "created", methods=["POST"])
    things.add_api_route("/stats", lambda: "stats", methods=["GET"])
    things.add_api_route("/sync", lambda: "synced", methods=["POST"])
    things.add_api_route("/bulk/export", lambda: "zip", methods=["POST"])

    def one(thing_id: int) -> int:
        return thing_id

    things.add_api_route("/{thing_id}", one, methods=["GET"])
    things.add_api_route("/{thing_id}", one, methods=["DELETE"])
    things.add_api_route("/{thing_id}/export", one, methods=["GET"])
    include(app, things, prefix="/api")

    async def ask() -> list[tuple[int, str | None, str]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            found = []
            for method, path in (
                ("GET", "/api/things/sync"),
                ("DELETE", "/api/things/sync"),
                ("DELETE", "/api/things/stats"),
                ("GET", "/api/things/bulk/export"),
                ("PUT", "/api/things"),
                ("POST", "/api/things/5"),
                ("POST", "/api/things/sync"),
                ("GET", "/api/things/stats"),
                ("GET", "/api/things/5"),
                ("GET", "/api/things/5/export"),
                ("GET", "/api/things/other"),
            ):
                response = await client.request(method, path)
                found.append((response.status_code, response.headers.get("allow"), response.text))
            return found

    answers = asyncio.run(ask())
    assert [(status, allow) for status, allow, _ in answers[:6]] == [
        (405, "POST"),
        (405, "POST"),
        (405, "GET, HEAD"),  # HEAD answers wherever GET does (RFC 9110 10.2.1)
        (405, "POST"),
        (405, "GET, HEAD, POST"),
        (405, "DELETE, GET, HEAD"),
    ]
    assert [text for _, _, text in answers[6:10]] == ['"synced"', '"stats"', "5", "5"]
    assert answers[10][0] == 422  # not a fixed path: the id parser's answer, as before
