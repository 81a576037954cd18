"""The authorization matrix, generated from the application's route table: every /api/v2
and /api/v1 route, called as each role, answers 403 exactly when the role lacks the
permission the route declares (`deps.require`), and something other than 403 (and 401)
otherwise. A route added later is in the table, so it cannot skip this; a route that
declares no permission fails, unless it is on the small explicit lists below."""

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from tessera.api.deps import current_actor, declared_permissions
from tessera.app import create_app
from tessera.config import Settings
from tessera.domains.identity import permissions
from tests.e2e.helpers import data
from tests.support import Server

ROLES = ("viewer", "auditor", "operator", "admin")  # admin last: self-service calls run first
# Open to anyone, by design: logging in, recovering a password, health probes.
PUBLIC = re.compile(
    r"^/api/(v2/|v1/)?(health|auth/(login|methods|forgot-password|reset-password|"
    r"email-configured|verify|logout|refresh|password-reset-request|mfa)|sso/(providers|"
    r"available|login|callback|ldap))"
)
# Any authenticated user: their own account, and global search (which returns only the
# kinds of results the caller's read permissions reveal).
SELF_SERVICE = re.compile(r"^/api/v2/(account(/|$)|search$)")
PLACEHOLDER = "999999"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    permissions: tuple[str, ...]
    authenticated: bool

    def url(self) -> str:
        return re.sub(r"\{[^}]+\}", PLACEHOLDER, self.path)


def _depends_on(dependant: Dependant, call: object) -> bool:
    stack = [dependant]
    while stack:
        node = stack.pop()
        if node.call is call:
            return True
        stack.extend(node.dependencies)
    return False


def route_table(server: Server) -> list[Endpoint]:
    """The live application's routes, as the server under test registers them."""
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    app = create_app(settings)
    try:
        found = []
        # Included routers are resolved lazily by FastAPI: iterate the effective routes.
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute):
                continue
            if not str(route.path).startswith(("/api/v2", "/api/v1")):
                continue
            perms = tuple(declared_permissions(route.dependant))
            authenticated = _depends_on(route.dependant, current_actor)
            for method in sorted(set(route.methods or ()) - {"HEAD"}):
                found.append(Endpoint(method, str(route.path), perms, authenticated))
        return found
    finally:
        app.state.runtime.engine.dispose()


@pytest.fixture(scope="module")
def role_keys(server: Server) -> dict[str, str]:
    keys = {"admin": server.api_key}
    with server.client() as api:
        for role in ROLES[:-1]:
            name = f"matrix-{role}-{uuid.uuid4().hex[:6]}"
            password = "Matrix-password-" + uuid.uuid4().hex
            body = {
                "username": name,
                "password": password,
                "role": role,
                "email": f"{name}@example.com",
            }
            data(api.post("/api/v2/users", json=body), 201)
            keys[role] = _api_key(server, name, password)
    return keys


def _api_key(server: Server, username: str, password: str) -> str:
    with server.client(api_key="") as client:
        login = client.post(
            "/api/v2/auth/login/password", json={"username": username, "password": password}
        )
        csrf = data(login)["csrf_token"]
        created = client.post(
            "/api/v2/account/apikeys", json={"name": "matrix"}, headers={"X-CSRF-Token": csrf}
        )
        return str(data(created, 201)["key"])


def _call(client: httpx.Client, endpoint: Endpoint) -> httpx.Response:
    body: dict[str, object] | None = {} if endpoint.method in ("POST", "PUT", "PATCH") else None
    return client.request(endpoint.method, endpoint.url(), json=body)


def _allowed(role: str, needed: tuple[str, ...]) -> bool:
    held = permissions.role_permissions(role)
    return all(permissions.grants(held, p) for p in needed)


def _clients(server: Server, keys: dict[str, str]) -> Iterator[tuple[str, httpx.Client]]:
    for role in ROLES:
        with server.client(api_key=keys[role]) as client:
            yield role, client


def test_route_table_is_not_empty(server: Server) -> None:
    table = route_table(server)
    paths = {e.path for e in table}
    assert "/api/v2/certificates" in paths and "/api/v2/system/security/rate-limit" in paths
    assert len(table) > 100


def test_every_route_declares_a_permission(server: Server) -> None:
    missing = [
        f"{e.method} {e.path}"
        for e in route_table(server)
        if not e.permissions and not PUBLIC.match(e.path) and not SELF_SERVICE.match(e.path)
    ]
    assert not missing, "routes without a declared permission:\n" + "\n".join(missing)


def test_authorization_matrix(server: Server, role_keys: dict[str, str]) -> None:
    failures: list[str] = []
    table = [e for e in route_table(server) if e.permissions or SELF_SERVICE.match(e.path)]
    with server.client(api_key="") as anonymous:
        for endpoint in table:
            status = _call(anonymous, endpoint).status_code
            if status != 401:
                failures.append(f"{endpoint.method} {endpoint.path} anonymous: {status}")
    for role, client in _clients(server, role_keys):
        for endpoint in table:
            expected_allowed = _allowed(role, endpoint.permissions)
            response = _call(client, endpoint)
            status = response.status_code
            name = f"{endpoint.method} {endpoint.path} as {role} (needs {endpoint.permissions})"
            if expected_allowed and status in (401, 403):
                failures.append(f"{name}: {status} {response.text[:120]}")
            elif expected_allowed and status >= 500 and status != 501:  # 501: said, not faked
                failures.append(f"{name}: server error {status}")
            elif not expected_allowed and status != 403:
                failures.append(f"{name}: expected 403, got {status}")
    assert not failures, f"{len(failures)} authorization failures:\n" + "\n".join(failures)
