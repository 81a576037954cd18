"""API keys are remembered by each server process (domains/identity/keycache.py), yet every
change to what a key grants applies on the very next request, whichever process serves it:
a group granted or taken away, a role changed, a key disabled, a user deactivated or deleted."""

from pathlib import Path

import pytest

from tests.e2e.accounts_helpers import create_user, key_for
from tests.e2e.helpers import API, data
from tests.support import (
    ADMIN_PASSWORD,
    Server,
    admin_api_key,
    database,
    start_server,
    stop_server,
)

BACKENDS = ["sqlite", "postgresql"]
TRIES = 12  # a new connection each: both worker processes answer some of them


def statuses(server: Server, key: str, method: str, path: str, **kw: object) -> set[int]:
    seen = set()
    for _ in range(TRIES):
        with server.client(api_key=key) as client:
            seen.add(client.request(method, path, **kw).status_code)  # type: ignore[arg-type]
    return seen


def can_read(server: Server, key: str) -> set[int]:
    return statuses(server, key, "GET", f"{API}/cas")


def can_write(server: Server, key: str) -> set[int]:
    # An unknown CA: 404 once the key may write certificates, 403 before.
    body = {"ca_id": 999999, "common_name": "x.example.com"}
    return statuses(server, key, "POST", f"{API}/certificates", json=body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_changes_to_a_cached_key_apply_at_once_in_every_worker(
    backend: str, tmp_path: Path
) -> None:
    with database(backend) as url:
        server = start_server(tmp_path / "data", url, workers=2)
        try:
            server.api_key = admin_api_key(server)
            with server.client() as api:
                bob = create_user(api, "viewer")
                group = {"name": "writers", "permissions": ["write:certificates"]}
                group_id = data(api.post(f"{API}/groups", json=group), 201)["id"]
                members = f"{API}/groups/{group_id}/members"
                data(api.post(members, json={"user_id": bob["id"]}), 201)
                key = key_for(server, bob["username"])  # viewer's permissions + the group's
                assert can_read(server, key) == {200}
                assert can_write(server, key) == {404}

                group["permissions"] = ["read:certificates"]
                data(api.put(f"{API}/groups/{group_id}", json=group))
                assert can_write(server, key) == {403}
                group["permissions"] = ["write:certificates"]
                data(api.put(f"{API}/groups/{group_id}", json=group))
                assert can_write(server, key) == {404}

                assert api.delete(f"{members}/{bob['id']}").status_code == 204
                assert can_write(server, key) == {403}
                data(api.put(f"{API}/users/{bob['id']}", json={"role": "operator"}))
                assert can_write(server, key) == {404}
                data(api.put(f"{API}/users/{bob['id']}", json={"role": "viewer"}))
                assert can_write(server, key) == {403}

                data(api.patch(f"{API}/users/{bob['id']}/toggle"))
                assert can_read(server, key) == {401}
                data(api.patch(f"{API}/users/{bob['id']}/toggle"))
                assert can_read(server, key) == {401}  # deactivation revoked it for good
                key = key_for(server, bob["username"])
                assert can_read(server, key) == {200}

                admin_key = key_for(server, "admin", password=ADMIN_PASSWORD)
                assert can_read(server, admin_key) == {200}
                own = data(api.get(f"{API}/account/apikeys"))
                newest = max(own, key=lambda k: k["id"])
                with server.client(api_key=admin_key) as mine:
                    data(
                        mine.patch(f"{API}/account/apikeys/{newest['id']}", json={"enabled": False})
                    )
                assert can_read(server, admin_key) == {401}

                assert api.delete(f"{API}/users/{bob['id']}").status_code == 204
                assert can_read(server, key) == {401}
        finally:
            stop_server(server)
