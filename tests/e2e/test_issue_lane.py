"""POST /api/v2/certificates is answered ahead of FastAPI's routing (tessera/api/v2/issue_lane.py):
what it answers must not differ from the route's own answers — content types, every error,
authentication by key and by cookie, the permission, the audit row's status, the body limit —
and nothing is written by a refused request."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from tests.e2e.accounts_helpers import PASSWORD, create_user, db, key_for, logged_in, past
from tests.e2e.helpers import API, create_root, data, error, unique
from tests.support import Server

ISSUE = f"{API}/certificates"


@pytest.fixture(scope="module")
def ca_id(server: Server) -> int:
    with server.client() as api:
        return int(create_root(api, unique("Lane Root"))["id"])


def body(ca_id: int, **extra: Any) -> dict[str, Any]:
    name = f"{unique('lane')}.example.com"
    return {"common_name": name, "ca_id": ca_id, "san": [f"dns:{name}"], **extra}


def total(api: httpx.Client) -> int:
    return int(data(api.get(f"{ISSUE}/stats"))["total"])


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_issues_with_each_json_content_type(
    api: httpx.Client, ca_id: int, content_type: str
) -> None:
    sent = body(ca_id, validity_days=30, key_usage=["digitalSignature"])
    response = api.post(ISSUE, json=sent, headers={"Content-Type": content_type})
    issued = data(response, 201)
    assert issued["common_name"] == sent["common_name"]
    assert issued["ca_id"] == ca_id and issued["status"] == "active"
    assert response.json()["message"] == "Certificate issued successfully"
    assert response.headers["x-request-id"] and response.headers["x-content-type-options"]
    fetched = data(api.get(f"{ISSUE}/{issued['id']}"))
    assert fetched["serial_number"] == issued["serial_number"]


def test_audit_row_records_the_routes_status(api: httpx.Client, ca_id: int) -> None:
    request_id = unique("lane-req")
    data(api.post(ISSUE, json=body(ca_id), headers={"X-Request-ID": request_id}), 201)
    found = api.get("/api/v1/audit-events", params={"request_id": request_id}).json()
    assert found["total"] == 1, found
    assert found["items"][0]["status_code"] == 201


@pytest.mark.parametrize(
    ("content", "headers", "status", "message"),
    [
        (b'{"ca_id": 1,', {"Content-Type": "application/json"}, 400, "malformed JSON body"),
        (b"", {"Content-Type": "application/json"}, 422, "body: Field required"),
        (b'{"common_name": "x"}', {"Content-Type": "application/json"}, 422, "ca_id: Field"),
        (b'{"ca_id": "one"}', {"Content-Type": "application/json"}, 422, "ca_id: Input"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 422, "valid dictionary"),
        (b'{"ca_id": 1}', {"Content-Type": "text/plain"}, 422, "valid dictionary"),
    ],
)
def test_bad_bodies_are_answered_as_on_every_route(
    api: httpx.Client, content: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    before = total(api)
    assert message in error(api.post(ISSUE, content=content, headers=headers), status)
    assert total(api) == before


def test_refusals_write_nothing(server: Server, api: httpx.Client, ca_id: int) -> None:
    before = total(api)
    with server.client(api_key="") as anonymous:
        assert "authentication" in error(anonymous.post(ISSUE, json=body(ca_id)), 401)
    with server.client(api_key="tsr_not-a-key") as wrong:
        assert "API key" in error(wrong.post(ISSUE, json=body(ca_id)), 401)
    viewer = create_user(api, role="viewer")
    with server.client(api_key=key_for(server, viewer["username"])) as reader:
        assert "write:certificates" in error(reader.post(ISSUE, json=body(ca_id)), 403)
    assert "not found" in error(api.post(ISSUE, json=body(999_999)), 404).lower()
    assert total(api) == before


def test_cookie_session_needs_the_csrf_token(server: Server, api: httpx.Client, ca_id: int) -> None:
    operator = create_user(api, role="operator")
    with logged_in(server, operator["username"]) as (client, csrf):
        assert "CSRF" in error(client.post(ISSUE, json=body(ca_id)), 403)
        issued = data(client.post(ISSUE, json=body(ca_id), headers={"X-CSRF-Token": csrf}), 201)
    assert issued["ca_id"] == ca_id


def test_streamed_body_over_the_limit_is_413(api: httpx.Client, ca_id: int) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as bytes arrive
        yield b'{"ca_id": %d, "common_name": "' % ca_id
        for _ in range(300):
            yield b"a" * 65536
        yield b'"}'

    before = total(api)
    headers = {"Content-Type": "application/json"}
    response = api.post(ISSUE, content=chunks(), headers=headers)
    assert "larger than" in error(response, 413)
    assert total(api) == before


def test_more_concurrent_issuances_than_lane_threads(
    server: Server, api: httpx.Client, ca_id: int
) -> None:
    """The lane runs issuance on two threads per process (deps.LANE_THREADS): requests that
    arrive meanwhile wait and are issued together in one unit of work, and each is issued
    once."""
    before = total(api)

    def one(_: int) -> dict[str, Any]:
        with server.client() as client:
            return dict(data(client.post(ISSUE, json=body(ca_id)), 201))

    with ThreadPoolExecutor(12) as pool:
        issued = list(pool.map(one, range(24)))
    assert len({cert["serial_number"] for cert in issued}) == 24
    assert total(api) == before + 24


def test_refusals_issued_together_with_good_requests_keep_their_answers(
    server: Server, api: httpx.Client, ca_id: int
) -> None:
    """Issuances waiting together form one batch (issue_lane.issue_batch): a refused request
    (an unknown CA, a viewer's key, a policy refusal) gets its own answer, the others are
    issued once each, every audit row carries its own request's id and certificate, and the
    audit chain, appended to a batch at a time, verifies."""
    viewer = key_for(server, create_user(api, role="viewer")["username"])
    before = total(api)
    good = [unique("batch-good") for _ in range(12)]

    def send(case: tuple[str, str]) -> tuple[str, int, Any]:
        kind, request_id = case
        sent = body(ca_id)
        headers = {"X-Request-ID": request_id}
        if kind == "unknown-ca":
            sent["ca_id"] = 999_999_999
        elif kind == "policy":
            sent["validity_days"] = 100_000
        with server.client(api_key=viewer if kind == "viewer" else None) as client:
            response = client.post(ISSUE, json=sent, headers=headers)
        issued = response.json()["data"]["id"] if response.status_code == 201 else None
        return kind, response.status_code, issued

    cases = [("good", request_id) for request_id in good]
    cases += [(kind, unique(kind)) for kind in ("unknown-ca", "policy", "viewer") * 3]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, cases))
    expected = {"good": 201, "unknown-ca": 404, "policy": 422, "viewer": 403}
    assert [(kind, status) for kind, status, _ in answers] == [
        (kind, expected[kind]) for kind, _ in cases
    ]
    assert total(api) == before + len(good)
    for request_id, (_, _, cert_id) in zip(good, answers, strict=False):
        found = api.get("/api/v1/audit-events", params={"request_id": request_id}).json()
        assert found["total"] == 1, found
        assert found["items"][0]["status_code"] == 201, found
        assert found["items"][0]["entity_id"] == str(cert_id), found
    assert data(api.get(f"{API}/audit/verify"))["valid"] is True


def test_two_organizations_issuing_together_keep_their_own_rows(
    server: Server, api: httpx.Client, ca_id: int
) -> None:
    """Issuances of two organizations waiting together are written by one batch: each
    certificate and audit row belongs to its own organization, and both audit chains verify
    (another organization is made in the database: there is no organization API)."""
    org_id = db(
        server,
        "INSERT INTO organizations (name, created_at) VALUES (?, ?) RETURNING id",
        (unique("lane-org"), past(server, 0)),
    )[0][0]
    username = unique("lane-admin")
    db(
        server,
        "INSERT INTO users (org_id, username, email, full_name, password_hash, role, active,"
        " created_at, totp_enabled) VALUES (?, ?, NULL, NULL, ?, 'admin', ?, ?, ?)",
        (org_id, username, PasswordHasher().hash(PASSWORD), True, past(server, 0), False),
    )
    their_key = key_for(server, username)
    with server.client(api_key=their_key) as theirs:
        their_ca = int(create_root(theirs, unique("Their Root"))["id"])

    def send(case: tuple[str | None, int, str]) -> int:
        key, ca, request_id = case
        with server.client(api_key=key) as client:
            response = client.post(ISSUE, json=body(ca), headers={"X-Request-ID": request_id})
            return int(data(response, 201)["id"])

    cases = [
        (key, ca, unique("two-orgs")) for key, ca in [(None, ca_id), (their_key, their_ca)] * 8
    ]
    with ThreadPoolExecutor(12) as pool:
        issued = list(pool.map(send, cases))
    with server.client(api_key=their_key) as theirs:
        for (key, _, request_id), cert_id in zip(cases, issued, strict=True):
            mine = key is not None
            assert theirs.get(f"{ISSUE}/{cert_id}").status_code == (200 if mine else 404)
            for client, expected in ((theirs, mine), (api, not mine)):
                found = client.get("/api/v1/audit-events", params={"request_id": request_id})
                rows = found.json()["items"]
                assert [r["entity_id"] for r in rows] == ([str(cert_id)] if expected else [])
        assert data(theirs.get(f"{API}/audit/verify"))["valid"] is True
    assert data(api.get(f"{API}/audit/verify"))["valid"] is True
