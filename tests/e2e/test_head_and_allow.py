"""HEAD answers as GET (docs/routing.md), with two consequences tested here: a HEAD of an
export sends nothing, so it writes no export audit row (a private key's, the audit log's),
though it needs the GET's permission; and a 405 lists HEAD in `Allow` wherever GET is taken
(RFC 9110 10.2.1: the methods the resource supports), on the API, the public plain-HTTP
paths and the protocol lanes."""

from typing import Any

import httpx
import pytest

from tests.e2e.helpers import API, create_root, data, issue, unique
from tests.support import Server

KEY_EXPORTS = [
    {"format": "pem", "include_key": "true"},
    {"format": "pem", "include_key": "true", "password": "a-good-key-password"},
    {"format": "pkcs12", "password": "a-good-key-password"},
]


@pytest.fixture
def plain(server: Server) -> Any:
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        yield client


def audit_rows(api: httpx.Client, action: str, resource_id: int | None = None) -> list[Any]:
    listed = api.get(f"{API}/audit/logs", params={"action": action, "per_page": 100})
    rows = data(listed)
    assert listed.json()["meta"]["total"] == len(rows) <= 100
    return [r for r in rows if resource_id is None or r["resource_id"] == str(resource_id)]


@pytest.mark.parametrize("params", KEY_EXPORTS)
def test_a_head_of_a_key_export_exports_and_audits_nothing(
    server: Server, api: httpx.Client, params: dict[str, str]
) -> None:
    root = create_root(api, unique("HEAD Export Root"))
    cert = issue(api, root["id"], f"{unique('head')}.example")
    path = f"{API}/certificates/{cert['id']}/export"
    exported = "certificate.export_key"

    head = api.head(path, params=params)
    assert head.status_code == 200 and head.content == b""
    assert audit_rows(api, exported, cert["id"]) == []  # no key left the server

    got = api.get(path, params=params)
    assert got.status_code == 200 and got.content
    assert len(audit_rows(api, exported, cert["id"])) == 1  # a GET is audited, as ever
    for name in ("content-type", "content-disposition"):
        assert head.headers[name] == got.headers[name], name
    if "password" not in params:  # an encrypted file's length may differ by its padding
        assert head.headers["content-length"] == got.headers["content-length"]

    # The GET's permission still: a reader's HEAD is refused as its GET, and audits nothing.
    reader = data(
        api.post(
            f"{API}/account/apikeys",
            json={"name": unique("reader"), "permissions": ["read:certificates"]},
        ),
        201,
    )["key"]
    with server.client(api_key=reader) as limited:
        assert limited.get(path, params=params).status_code == 403
        assert limited.head(path, params=params).status_code == 403
    assert len(audit_rows(api, exported, cert["id"])) == 1


@pytest.mark.parametrize("path", [f"{API}/audit/export", "/api/v1/audit/export"])
def test_a_head_of_the_audit_export_audits_nothing(api: httpx.Client, path: str) -> None:
    before = len(audit_rows(api, "audit.export"))
    head = api.head(path)
    assert head.status_code == 200 and head.content == b""
    assert len(audit_rows(api, "audit.export")) == before
    got = api.get(path)
    assert got.status_code == 200 and got.content
    assert len(audit_rows(api, "audit.export")) == before + 1
    for name in ("content-type", "content-disposition"):
        assert head.headers[name].split("-20")[0] == got.headers[name].split("-20")[0], name


def test_a_405_lists_head_wherever_get_answers(api: httpx.Client, plain: httpx.Client) -> None:
    """And every method it lists is one the path takes: HEAD there is not a 405."""
    root = create_root(api, unique("Allow Root"))
    refid, ca = root["refid"], root["id"]
    refusals = [
        (api, "POST", f"{API}/cas/{ca}/export", "GET, HEAD"),  # a GET-only path
        (api, "DELETE", f"{API}/cas/export", "GET, HEAD"),  # a GET-only fixed path
        (api, "DELETE", f"{API}/cas", "GET, HEAD, POST"),
        (api, "POST", f"{API}/cas/{ca}", "DELETE, GET, HEAD, PATCH"),
        (api, "GET", f"{API}/truststore/sync", "POST"),  # no GET: no HEAD
        (api, "POST", f"{API}/health", "GET, HEAD"),  # GET and HEAD routes of their own
        (api, "DELETE", "/acme/directory", "GET, HEAD, POST"),  # POST: the ACME lane's JWS
        (api, "PUT", "/acme/new-nonce", "GET, HEAD, POST"),
        (plain, "POST", f"/ca/{refid}.cer", "GET, HEAD"),
        (plain, "POST", f"/cdp/{refid}.crl", "GET, HEAD"),
        (plain, "HEAD", "/ocsp", "POST"),  # POST /ocsp only; GET takes /ocsp/{request}
        (plain, "DELETE", "/ocsp/MAo=", "GET, HEAD"),
        (plain, "PUT", "/ocsp/", "GET, HEAD, POST"),
        (plain, "DELETE", "/scep/pkiclient.exe", "GET, HEAD, POST"),
    ]
    wrong = []
    for client, method, path, allow in refusals:
        refused = client.request(method, path)
        if (refused.status_code, refused.headers.get("allow")) != (405, allow):
            wrong.append((method, path, refused.status_code, refused.headers.get("allow")))
        if "HEAD" in allow and client.head(path).status_code == 405:
            wrong.append(("HEAD", path, 405, "listed but refused"))
    assert wrong == [], "\n".join(map(str, wrong))
