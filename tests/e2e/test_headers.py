"""Headers on every response, CORS from CORS_ORIGINS, and the request-body size limit."""

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tessera import __version__
from tests.conftest import BACKENDS
from tests.e2e.helpers import error
from tests.support import Server, module_server

ALLOWED = "https://ui.example.test"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "CORS_ORIGINS": f"{ALLOWED}, http://localhost:3000",
        "TESSERA_MAX_BODY_BYTES": str(MAX_BODY),
    }
    with module_server(request.param, tmp_path_factory.mktemp("tessera") / "data", env) as running:
        yield running


def _security_headers(response: httpx.Response, https: bool = True) -> None:
    headers = response.headers
    assert headers["x-api-version"] == __version__
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    assert len(headers["x-request-id"]) >= 8
    if https:
        assert headers["strict-transport-security"].startswith("max-age=")
    else:
        assert "strict-transport-security" not in headers


def test_headers_on_success_error_and_public_responses(server: Server, api: httpx.Client) -> None:
    ok = api.get("/api/v2/cas")
    _security_headers(ok)
    assert ok.headers["content-security-policy"].startswith("default-src 'none'")
    assert ok.headers["cache-control"] == "no-store"
    for response in (
        api.get("/api/v2/certificates/999999"),  # 404
        api.get("/api/v2/nothing-here"),  # router 404
        api.post("/api/v2/cas", content=b"{not json", headers={"Content-Type": "application/json"}),
    ):
        assert response.status_code >= 400
        _security_headers(response)
    with server.client(api_key="") as anonymous:
        unauthenticated = anonymous.get("/api/v2/cas")
        assert unauthenticated.status_code == 401
        _security_headers(unauthenticated)
        _security_headers(anonymous.get("/api/v2/health"))
        docs = anonymous.get("/api/docs")
        assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    # The plain-HTTP listener: no HSTS there (it is meaningless over HTTP), the rest is.
    with httpx.Client(base_url=server.http_url) as plain:
        _security_headers(plain.get("/ca/999999.pem"), https=False)
        refused = plain.get("/api/v2/health")  # the API is HTTPS only
        assert refused.status_code == 404 and "HTTPS" in refused.json()["message"]
        _security_headers(refused, https=False)
        # SCEP takes a lane of its own there (protocols/scep/endpoint.public_lane).
        scep = plain.get("/scep/pkiclient.exe", params={"operation": "GetCACaps"})
        _security_headers(scep, https=False)
        echoed = plain.get(
            "/cgi-bin/pkiclient.exe?operation=Nope", headers={"X-Request-ID": "a.b-1"}
        )
        assert echoed.status_code == 400
        assert echoed.headers["x-request-id"] == "a.b-1"


def test_request_id_echoed_when_plain_replaced_otherwise(api: httpx.Client) -> None:
    assert (
        api.get("/api/v2/cas", headers={"X-Request-ID": "abc-123.x"}).headers["x-request-id"]
        == "abc-123.x"
    )
    replaced = api.get("/api/v2/cas", headers={"X-Request-ID": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"
    first = api.get("/api/v2/cas").headers["x-request-id"]
    assert first != api.get("/api/v2/cas").headers["x-request-id"]


def test_cors_preflight_allowed_origin(server: Server) -> None:
    with server.client(api_key="") as client:
        response = client.options(
            "/api/v2/certificates",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-csrf-token",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "x-csrf-token" in response.headers["access-control-allow-headers"].lower()
    _security_headers(response)


def test_cors_simple_request_allowed_and_denied(server: Server, api: httpx.Client) -> None:
    allowed = api.get("/api/v2/cas", headers={"Origin": ALLOWED})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "x-ratelimit-remaining" in allowed.headers["access-control-expose-headers"].lower()
    denied = api.get("/api/v2/cas", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers


@pytest.mark.parametrize("origin", ["https://evil.example", "null", ALLOWED + ".evil.example"])
def test_cors_preflight_denied_origin(server: Server, origin: str) -> None:
    with server.client(api_key="") as client:
        response = client.options(
            "/api/v2/certificates",
            headers={"Origin": origin, "Access-Control-Request-Method": "DELETE"},
        )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_body_over_limit_refused_with_413(api: httpx.Client) -> None:
    body = b'{"common_name": "' + b"a" * (MAX_BODY + 10) + b'"}'
    message = error(
        api.post("/api/v2/cas", content=body, headers={"Content-Type": "application/json"}), 413
    )
    assert str(MAX_BODY) in message
    # Just under the limit goes through to validation.
    small = api.post("/api/v2/cas", json={"common_name": "a" * 100})
    assert small.status_code != 413


def test_chunked_body_over_limit_refused_before_it_is_read(api: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"common_name": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'"}'

    response = api.post(
        "/api/v2/cas", content=chunks(), headers={"Content-Type": "application/json"}
    )
    error(response, 413)


def test_declared_length_refused_without_sending_the_body(server: Server, tmp_path: Path) -> None:
    """A huge Content-Length is answered at once: the server does not wait for the body."""
    context = server.ssl_context()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(
            b"POST /api/v2/cas HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n"
            + f"X-API-Key: {server.api_key}\r\n\r\n".encode()
        )
        head = _read_head(tls)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def _read_head(tls: ssl.SSLSocket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = tls.recv(4096)
        if not chunk:
            break
        received += chunk
    return received
