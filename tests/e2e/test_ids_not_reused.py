"""The id of a deleted certificate, template or CA is never given to the next one, on both
backends (SQLite's tables are AUTOINCREMENT since migration 0015): an audit row or a client
that still names the deleted id must not come to name another object."""

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.helpers import API, create_root, data, issue, unique
from tests.support import Server


@pytest.fixture(scope="module")
def ca_id(server: Server) -> int:
    with server.client() as api:
        return int(create_root(api, unique("Ids Root"))["id"])


def certificate(api: httpx.Client, ca: int) -> int:
    return int(issue(api, ca, f"{unique('ids')}.example.com")["id"])


def template(api: httpx.Client, _ca: int) -> int:
    return int(data(api.post(f"{API}/templates", json={"name": unique("ids")}), 201)["id"])


def authority(api: httpx.Client, _ca: int) -> int:
    return int(create_root(api, unique("Ids Spare"))["id"])


@pytest.mark.parametrize(
    ("path", "create"),
    [("certificates", certificate), ("templates", template), ("cas", authority)],
)
def test_a_deleted_id_is_not_given_again(
    api: httpx.Client, ca_id: int, path: str, create: Callable[[httpx.Client, int], int]
) -> None:
    deleted = create(api, ca_id)  # the newest row of its table
    assert api.delete(f"{API}/{path}/{deleted}").status_code == 204
    assert create(api, ca_id) > deleted
