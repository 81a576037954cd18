"""The UCM seed's sections "Certificate Authorities", "Certificates", "Certificate Signing
Requests" and "Templates", request for request as the seed writes them, against a real
server: statuses, the envelope and the fields' types (docs/native-api.md)."""

from typing import Any

import httpx
import pytest

from tests.e2e.helpers import API, create_root, data, issue, unique
from tests.support import Server


@pytest.fixture(scope="module")
def root(server: Server) -> dict[str, Any]:
    with server.client() as client:
        return create_root(client, unique("Seed Root"))


# --- listings ------------------------------------------------------------------------------------


def _listing(api: httpx.Client, path: str, params: dict[str, str]) -> tuple[list[Any], Any]:
    response = api.get(path, params=params)
    return data(response), response.json()["meta"]


@pytest.mark.parametrize(
    ("path", "filters", "default_per_page"),
    [
        ("/certificates", ("status", "ca_id", "search"), 50),
        ("/cas", (), 20),
        ("/cas/ROOT/certificates", ("status",), 50),
        ("/csrs", ("status",), 20),
        ("/csrs/history", (), 20),
    ],
)
def test_empty_query_parameters_are_not_sent(
    api: httpx.Client,
    root: dict[str, Any],
    path: str,
    filters: tuple[str, ...],
    default_per_page: int,
) -> None:
    """A form with its boxes cleared sends every parameter empty (`?ca_id=&page=`): that is
    no filter and the default page, on every listing, as `status=` already was."""
    issue(api, root["id"], unique("listed") + ".example.com")
    url = API + path.replace("ROOT", str(root["id"]))
    rows, meta = _listing(api, url, {})
    empty = {name: "" for name in (*filters, "page", "per_page")}
    rows_empty, meta_empty = _listing(api, url, empty)
    assert meta == meta_empty == {"page": 1, "per_page": default_per_page, "total": meta["total"]}
    assert rows_empty == rows


# --- bulk operations -----------------------------------------------------------------------------

UNKNOWN_ID = 2_000_000_000


@pytest.mark.parametrize("kind", ["cas", "certificates", "csrs", "templates"])
def test_bulk_delete_says_why_each_id_failed(api: httpx.Client, kind: str) -> None:
    """Every bulk delete answers the seed's {"success", "failed"} with the same `errors`
    beside it: one reason per failed id, and a message."""
    response = api.post(f"{API}/{kind}/bulk/delete", json={"ids": [UNKNOWN_ID]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "message"} and isinstance(body["message"], str)
    assert set(body["data"]) == {"success", "failed", "errors"}, body
    assert body["data"]["success"] == [] and body["data"]["failed"] == [UNKNOWN_ID]
    [reason] = body["data"]["errors"]
    assert reason["id"] == UNKNOWN_ID and "not found" in reason["error"], reason
