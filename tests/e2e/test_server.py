"""The server as a whole: health endpoints, the OpenAPI document, the plain-HTTP listener,
its own TLS certificate, publication URLs inside issued certificates, serials, envelopes."""

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID
from fastapi.routing import APIRoute, iter_route_contexts
from openapi_spec_validator import validate

from tessera import __version__
from tessera.app import create_app
from tessera.config import Settings
from tests.e2e.helpers import (
    API,
    cert_of,
    create_intermediate,
    create_root,
    data,
    download,
    error,
    issue,
    unique,
)
from tests.support import (
    ADMIN_PASSWORD,
    Server,
    admin_api_key,
    database,
    start_server,
    stop_server,
)
from tests.tools import openssl, openssl_verify

HEALTH_BASES = ["/api/v2/health", "/api/health", "/health"]


@pytest.fixture
def anonymous(server: Server) -> Any:
    with server.client(api_key="") as client:
        yield client


@pytest.fixture
def plain(server: Server) -> Any:
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        yield client


# Health


@pytest.mark.parametrize("base", HEALTH_BASES)
def test_health_endpoints(anonymous: httpx.Client, base: str) -> None:
    basic = anonymous.get(base)
    assert basic.status_code == 200
    body = basic.json()
    assert set(body) == {"status", "service", "version", "started_at", "websocket"}
    assert body["status"] == "ok" and body["version"] == __version__
    assert body["service"] == "ucm"  # the seed's identifier, which its clients check
    assert isinstance(body["websocket"], bool)
    assert isinstance(body["started_at"], float)
    assert time.time() - 3600 < body["started_at"] <= time.time()

    ready = anonymous.get(f"{base}/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": {"status": "ok"}, "filesystem": {"status": "ok"}},
    }

    live = anonymous.get(f"{base}/live")
    assert live.status_code == 200
    assert live.json() == {"status": "alive", "service": "ucm"}
    for path in (base, f"{base}/ready", f"{base}/live"):  # load-balancer probes send HEAD
        assert anonymous.head(path).status_code == 200


def test_health_aliases_agree(anonymous: httpx.Client) -> None:
    started = {anonymous.get(base).json()["started_at"] for base in HEALTH_BASES}
    assert len(started) == 1


def test_readiness_leaves_no_files_behind(anonymous: httpx.Client, server: Server) -> None:
    before = sorted(p.name for p in server.data_dir.iterdir())
    for _ in range(3):
        assert anonymous.get("/api/v2/health/ready").status_code == 200
    assert sorted(p.name for p in server.data_dir.iterdir()) == before


# OpenAPI and docs


def test_openapi_document_is_valid(anonymous: httpx.Client) -> None:
    response = anonymous.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in (
        "/api/v2/cas",
        "/api/v2/cas/{ca_id}",
        "/api/v2/cas/import",
        "/api/v2/cas/bulk/delete",
        "/api/v2/cas/bulk/export",
        "/api/v2/cas/export",
        "/api/v2/certificates",
        "/api/v2/certificates/{cert_id}/revoke",
        "/api/v2/certificates/{cert_id}/renew",
        "/api/v2/certificates/stats",
        "/api/v2/health",
        "/api/v2/health/ready",
        "/api/v2/health/live",
    ):
        assert path in paths, path
    assert {"get", "patch", "delete"} <= set(paths["/api/v2/cas/{ca_id}"])
    # Bounds are JSON Schema's minimum/maximum, which clients and fuzzers read, never
    # pydantic's own ge/le (what it writes for bounds placed after a validator).
    assert not list(_pydantic_bounds(document)), list(_pydantic_bounds(document))[:5]
    bulk_sign = document["components"]["schemas"]["BulkSignCSRs"]["properties"]
    assert bulk_sign["ca_id"]["minimum"] == 1 and bulk_sign["ca_id"]["maximum"] == 2**31 - 1


def _pydantic_bounds(node: Any, where: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number") and {"ge", "le", "gt", "lt"} & set(node):
            yield where
        for key, value in node.items():
            yield from _pydantic_bounds(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _pydantic_bounds(value, f"{where}/{index}")


# Operations that take no request body by design: each acts on what its path (or the
# caller's session) names, and its handler reads no body.
NO_BODY = {
    ("POST", "/api/v2/auth/logout"): "ends the caller's session",
    ("POST", "/api/v2/account/2fa/enable"): "starts an enrolment; the secret is generated",
    ("POST", "/api/v2/account/apikeys/{key_id}/regenerate"): "the new secret is generated",
    ("POST", "/api/v2/account/sessions/revoke-all"): "every session but the caller's",
    ("POST", "/api/v2/truststore/sync"): "reads the system CA bundle",
    ("PATCH", "/api/v2/users/{user_id}/toggle"): "flips the user's active flag",
    ("POST", "/api/v2/users/{user_id}/2fa/reset"): "the user in the path",
    ("POST", "/api/v2/acme/accounts/{account_id}/deactivate"): "the account in the path",
    ("POST", "/api/v2/acme/orders/{order_id}/approve"): "the order in the path",
    ("POST", "/api/v2/acme/renewal/{certificate_id}"): "the certificate in the path",
    ("POST", "/api/v2/scep/{request_id}/approve"): "the request in the path",
    ("POST", "/api/v2/scep/challenge/{ca_id}/regenerate"): "the password is generated",
    ("POST", "/api/v2/crl/{ca_id}/regenerate"): "the CA in the path",
    ("POST", "/api/v2/system/audit/syslog/test"): "sends to the configured server",
    ("POST", "/api/v2/system/security/rate-limit/reset"): "clears every window",
}
# The routes that read their body themselves (api/v2/uploads.py, api/v2/imports.py).
UPLOADS = {
    "/api/v2/cas/import": {"password", "name", "import_key", "private_key"},
    "/api/v2/certificates/import": {"password", "name", "ca_id", "import_key", "private_key"},
    "/api/v2/csrs/upload": {"name"},
    "/api/v2/csrs/import": {"name"},
    "/api/v2/truststore/import": {"password", "name", "description", "purpose", "notes"},
    "/api/v2/templates/import": {"update_existing"},
    "/api/v2/import/analyze": {"password", "import_cas", "import_certificates", "import_keys"},
    "/api/v2/import/execute": {"password", "import_cas", "import_certificates", "import_keys"},
}


def test_openapi_describes_every_request_body(anonymous: httpx.Client) -> None:
    """Generated clients and the fuzz test learn what to send from the document alone, the
    bodies that handlers read themselves (uploads, imports, ACME's JWS) included."""
    document = anonymous.get("/api/openapi.json").json()
    validate(document)
    paths = document["paths"]
    without = {
        (method.upper(), path)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in ("post", "put", "patch") and "requestBody" not in operation
    }
    assert without == set(NO_BODY)
    for path, fields in UPLOADS.items():
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True, path
        content = body["content"]
        assert set(content) == {"multipart/form-data", "application/json"}, path
        form = content["multipart/form-data"]["schema"]
        assert form["required"] == ["file"], path
        assert {"file"} | fields <= set(form["properties"]), path
        assert "$ref" not in str(content["application/json"]), path  # nothing left dangling
    # Every POST under /acme/ is a JWS (RFC 8555 6.2), POST-as-GET included.
    signed = {
        p: item["post"] for p, item in paths.items() if p.startswith("/acme/") and "post" in item
    }
    assert len(signed) == 14
    for path, post in signed.items():
        (media,) = post["requestBody"]["content"]
        assert media == "application/jose+json", path
        schema = post["requestBody"]["content"][media]["schema"]
        assert schema["required"] == ["protected", "payload", "signature"], path


def test_docs_ui(anonymous: httpx.Client) -> None:
    response = anonymous.get("/api/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower() and "/api/openapi.json" in response.text


# Secure defaults


def listeners(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (IPv4 and IPv6), from /proc."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_both_listeners_are_on_loopback_only_by_default(server: Server) -> None:
    # The fixture gives no --host and no TESSERA_HOST: what a newcomer's `make run` gets.
    loopback = socket.inet_aton("127.0.0.1")[::-1].hex().upper()  # /proc's byte order
    assert listeners(server.port) == {loopback}
    assert listeners(server.http_port) == {loopback}


def test_the_admin_password_is_not_in_the_server_log(server: Server) -> None:
    with server.client(api_key="") as client:
        for password in (ADMIN_PASSWORD, ADMIN_PASSWORD + "-wrong"):
            client.post(
                "/api/v2/auth/login/password", json={"username": "admin", "password": password}
            )
    assert server.log().strip()  # the log is there (start-up lines), and it holds no password
    assert ADMIN_PASSWORD not in server.log()


# The plain-HTTP listener


def test_plain_http_serves_only_public_material(
    api: httpx.Client, plain: httpx.Client, server: Server
) -> None:
    root = create_root(api, unique("AIA Root"))
    der = download(api, f"{API}/cas/{root['id']}/export", format="der").content
    pem = download(api, f"{API}/cas/{root['id']}/export", format="pem").text
    by_refid = plain.get(f"/ca/{root['refid']}.cer")
    assert by_refid.status_code == 200, by_refid.text
    assert by_refid.headers["content-type"] == "application/pkix-cert"
    assert by_refid.content == der
    assert plain.get(f"/ca/{root['id']}.cer").content == der
    by_id = plain.get(f"/ca/{root['id']}.pem")
    assert by_id.status_code == 200 and by_id.text == pem
    assert plain.get(f"/ca/{root['refid']}.pem").text == pem
    assert plain.get("/ca/00000000-0000-0000-0000-000000000000.cer").status_code == 404
    assert plain.get("/ca/987654321.pem").status_code == 404
    headers = {"X-API-Key": server.api_key}
    for path in (
        "/api/v2/cas",
        "/api/v2/health",
        "/api/v2/health/ready",
        "/health",
        "/api/openapi.json",
        "/api/docs",
        f"/api/v2/cas/{root['id']}/export",
    ):
        refused = plain.get(path, headers=headers)
        assert refused.status_code == 404, path
        assert refused.json()["error"] is True, path
    posted = plain.post("/api/v2/cas", headers=headers, json={"common_name": "nope"})
    assert posted.status_code == 404


def test_https_serves_aia_too(api: httpx.Client) -> None:
    root = create_root(api, unique("AIA HTTPS Root"))
    der = download(api, f"{API}/cas/{root['id']}/export", format="der").content
    assert api.get(f"/ca/{root['refid']}.cer").content == der


def _same_but_bodiless(client: httpx.Client, path: str, **extra: Any) -> httpx.Response:
    """HEAD answers as GET does (RFC 9110 9.3.2): same status and headers, no body."""
    got, head = client.get(path, **extra), client.head(path, **extra)
    assert head.status_code == got.status_code, (path, head.status_code, head.text)
    assert head.content == b"", path
    for name in ("content-type", "content-length", "cache-control", "etag"):
        assert head.headers.get(name) == got.headers.get(name), (path, name)
    assert int(head.headers["content-length"]) == len(got.content), path
    return head


def test_head_answers_every_get_resource(
    api: httpx.Client, plain: httpx.Client, anonymous: httpx.Client
) -> None:
    """FastAPI's routes, unlike Starlette's, took no HEAD: a 405 for every GET resource, the
    CA certificates relying parties fetch over plain HTTP included."""
    root = create_root(api, unique("HEAD Root"))
    for path in (f"/ca/{root['refid']}.cer", f"/ca/{root['id']}.pem"):  # the CRLs took HEAD
        assert _same_but_bodiless(plain, path).status_code == 200, path
    assert _same_but_bodiless(plain, "/ca/987654321.cer").status_code == 404
    for path in (
        f"{API}/cas",  # a fixed path
        f"{API}/cas/{root['id']}",  # a path with a parameter
        f"{API}/cas/{root['id']}/export",
        f"{API}/certificates",
        "/api/openapi.json",
    ):
        assert _same_but_bodiless(api, path).status_code == 200, path
    assert _same_but_bodiless(api, f"{API}/cas/987654321").status_code == 404
    assert _same_but_bodiless(anonymous, f"{API}/cas").status_code == 401
    # A resource without GET still refuses HEAD, naming its methods.
    for path, allow in (
        (f"{API}/truststore/sync", "POST"),
        (f"{API}/cas/import", "POST"),
        (f"{API}/cas/{root['id']}/revoke", "POST"),
    ):
        refused = api.head(path)
        assert (refused.status_code, refused.headers.get("allow")) == (405, allow), path
    # The document gains no HEAD operation beside each GET.
    document = anonymous.get("/api/openapi.json").json()
    assert "head" not in document["paths"][f"{API}/cas"]


# The server's own certificate


def peer_certificate(server: Server) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


def test_tls_certificate_comes_from_the_internal_ca(
    api: httpx.Client, server: Server, workdir: Path
) -> None:
    served = peer_certificate(server)
    internal = [
        ca for ca in data(api.get(f"{API}/cas", params={"per_page": 100})) if ca["internal"]
    ]
    assert len(internal) == 1
    ca = data(api.get(f"{API}/cas/{internal[0]['id']}"))
    ca_cert = cert_of(ca["pem"])
    assert served.issuer == ca_cert.subject
    served.verify_directly_issued_by(ca_cert)
    assert ca["has_private_key"] is True and ca["imported"] is False
    served_pem = served.public_bytes(serialization.Encoding.PEM).decode()
    assert "OK" in openssl_verify(workdir, served_pem, [ca["pem"]])
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}

    serial = f"0x{served.serial_number:X}"
    everything = data(api.get(f"{API}/certificates", params={"per_page": 100, "page": 1}))
    total = api.get(f"{API}/certificates").json()["meta"]["total"]
    page = 2
    while len(everything) < total:
        everything += data(api.get(f"{API}/certificates", params={"per_page": 100, "page": page}))
        page += 1
    listed = [c for c in everything if c["serial_number"] == serial]
    assert len(listed) == 1
    row = listed[0]
    assert row["ca_id"] == ca["id"] and row["status"] == "active"
    assert row["source"] == "bootstrap"
    shown = data(api.get(f"{API}/certificates/{row['id']}"))
    assert cert_of(shown["pem"]) == served
    under_ca = data(api.get(f"{API}/cas/{ca['id']}/certificates"))
    assert row["id"] in {c["id"] for c in under_ca}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("action", ["revoke", "delete"])
def test_a_revoked_or_deleted_tls_certificate_is_replaced_at_the_next_start(
    backend: str, action: str, tmp_path: Path
) -> None:
    """Its key leaked, an administrator revokes the server's own certificate (or removes it
    from the inventory): the next start must not serve it again."""
    folder = tmp_path / "data"
    with database(backend) as url:
        running = start_server(folder, url)
        try:
            running.api_key = admin_api_key(running)
            old = peer_certificate(running)
            with running.client() as api:
                listed = data(api.get(f"{API}/certificates", params={"search": "localhost"}))
                [row] = [c for c in listed if c["serial_number"] == f"0x{old.serial_number:X}"]
                if action == "revoke":
                    body = {"reason": "keyCompromise"}
                    data(api.post(f"{API}/certificates/{row['id']}/revoke", json=body))
                else:
                    assert api.delete(f"{API}/certificates/{row['id']}").status_code == 204
        finally:
            stop_server(running)
        running = start_server(folder, url)
        try:
            new = peer_certificate(running)
            assert new.serial_number != old.serial_number
            assert new.public_key() != old.public_key()
            running.api_key = admin_api_key(running)
            with running.client() as api:
                shown = data(api.get(f"{API}/certificates", params={"search": "localhost"}))
                assert f"0x{new.serial_number:X}" in {c["serial_number"] for c in shown}
        finally:
            stop_server(running)


# Publication URLs and serials


def test_publication_urls_point_at_the_plain_http_listener(
    api: httpx.Client, plain: httpx.Client, server: Server, workdir: Path
) -> None:
    root = create_root(api, unique("Publishing Root"))
    inter = create_intermediate(api, root["id"], unique("Publishing Issuing"))
    leaf_row = issue(api, inter["id"], "published.example.com")
    leaf = cert_of(data(api.get(f"{API}/certificates/{leaf_row['id']}"))["pem"])

    cdp = leaf.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    urls = [name.value for point in cdp for name in point.full_name or []]
    assert urls == [f"{server.http_url}/cdp/{inter['refid']}.crl"]
    aia = leaf.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    issuers = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    assert issuers == [f"{server.http_url}/ca/{inter['refid']}.cer"]
    ocsp = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    assert all(url.startswith(f"{server.http_url}/") for url in ocsp)

    fetched = httpx.get(issuers[0], timeout=30)  # a relying party, without TLS or credentials
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "application/pkix-cert"
    issuer_cert = x509.load_der_x509_certificate(fetched.content)
    assert fetched.content == download(api, f"{API}/cas/{inter['id']}/export", format="der").content
    leaf.verify_directly_issued_by(issuer_cert)
    parsed = openssl("x509", "-inform", "DER", "-noout", "-subject", input=fetched.content)
    assert parsed.returncode == 0 and inter["common_name"] in parsed.stdout.decode()

    # The intermediate's own AIA points at its root, which is served the same way.
    inter_cert = cert_of(data(api.get(f"{API}/cas/{inter['id']}"))["pem"])
    inter_aia = inter_cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    up = [
        d.access_location.value
        for d in inter_aia.value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    assert up == [f"{server.http_url}/ca/{root['refid']}.cer"]
    inter_cert.verify_directly_issued_by(x509.load_der_x509_certificate(httpx.get(up[0]).content))
    # A root has nobody to point at.
    root_cert = cert_of(data(api.get(f"{API}/cas/{root['id']}"))["pem"])
    assert not any(
        e.oid in (ExtensionOID.AUTHORITY_INFORMATION_ACCESS, ExtensionOID.CRL_DISTRIBUTION_POINTS)
        for e in root_cert.extensions
    )


def test_serials_are_positive_unique_and_long(api: httpx.Client, workdir: Path) -> None:
    root = create_root(api, unique("Serial Root"))
    rows = [issue(api, root["id"], f"s{i}.example.com") for i in range(8)]
    serials = []
    for row in rows:
        pem = data(api.get(f"{API}/certificates/{row['id']}"))["pem"]
        cert = cert_of(pem)
        assert cert.serial_number > 0
        assert 64 <= cert.serial_number.bit_length() <= 159  # at most 20 octets, positive
        assert row["serial_number"] == f"0x{cert.serial_number:X}"
        path = workdir / f"{row['id']}.pem"
        path.write_text(pem)
        shown = openssl("x509", "-in", str(path), "-noout", "-serial").stdout.decode()
        assert int(shown.strip().split("=", 1)[1], 16) == cert.serial_number
        serials.append(cert.serial_number)
    root_serial = int(root["serial_number"], 16)
    assert root_serial > 0 and root_serial.bit_length() >= 64
    assert len({*serials, root_serial}) == len(serials) + 1


# Envelopes


def test_success_envelopes(api: httpx.Client) -> None:
    created = api.post(
        f"{API}/cas",
        json={"common_name": unique("Envelope Root"), "key_algorithm": "EC", "key_size": 256},
    )
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    body = created.json()
    assert set(body) == {"data", "message"} and body["message"] == "CA created successfully"
    assert isinstance(body["data"], dict) and isinstance(body["data"]["id"], int)

    listed = api.get(f"{API}/cas", params={"per_page": 5}).json()
    assert set(listed) == {"data", "meta"}
    assert isinstance(listed["data"], list)
    assert set(listed["meta"]) == {"page", "per_page", "total"}
    assert all(isinstance(v, int) for v in listed["meta"].values())

    single = api.get(f"{API}/cas/{body['data']['id']}").json()
    assert set(single) == {"data"} and single["data"]["id"] == body["data"]["id"]

    issued = api.post(
        f"{API}/certificates",
        json={"common_name": "envelope.example.com", "ca_id": body["data"]["id"]},
    ).json()
    assert issued["message"] == "Certificate issued successfully"
    for field in (
        "id",
        "serial_number",
        "common_name",
        "status",
        "valid_from",
        "valid_until",
        "private_key_available",
    ):
        assert field in issued["data"], field
    assert issued["data"]["valid_from"].endswith("Z")

    stats = api.get(f"{API}/certificates/stats").json()
    assert set(stats) == {"data"}


def test_error_envelopes(api: httpx.Client, anonymous: httpx.Client) -> None:
    def check(response: httpx.Response, status: int) -> None:
        error(response, status)
        assert set(response.json()) == {"error", "code", "message"}
        assert response.headers["content-type"] == "application/json"

    check(api.get(f"{API}/cas/987654321"), 404)
    check(api.get(f"{API}/no-such-endpoint"), 404)
    check(anonymous.get(f"{API}/cas"), 401)
    check(api.get(f"{API}/cas/not-a-number"), 422)
    check(api.post(f"{API}/cas", json={"ca_type": "root"}), 422)
    check(
        api.post(f"{API}/cas", content=b"{not json", headers={"content-type": "application/json"}),
        400,
    )
    check(api.get(f"{API}/certificates", params={"status": "nope"}), 400)
    check(api.delete(f"{API}/cas"), 405)


def fixed_paths(server: Server) -> dict[str, set[str]]:
    """Every path of the live application's API that has no parameter, with its methods."""
    app = create_app(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        paths: dict[str, set[str]] = {}
        for route in iter_route_contexts(app.routes):
            path = str(route.path)
            api = isinstance(route.original_route, APIRoute) and path.startswith("/api/")
            if api and "{" not in path:
                paths.setdefault(path, set()).update(route.methods or ())
        return paths
    finally:
        app.state.runtime.engine.dispose()


def test_a_wrong_method_on_a_fixed_path_is_405(server: Server, api: httpx.Client) -> None:
    """A fixed path is never read as the id of a `/{id}` route beside it: `GET
    /truststore/sync` (the seed's POST) is a 405 naming the path's methods in `Allow`, as for
    every other method a fixed path does not take, never the id parser's 422."""
    paths = fixed_paths(server)
    assert paths["/api/v2/truststore/sync"] == {"POST"}
    assert paths["/api/v2/cas"] == {"GET", "POST"}
    wrong = []
    for path, methods in sorted(paths.items()):
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - methods):
            response = api.request(method, path)
            allow = response.headers.get("allow")
            envelope = set(response.json())  # each dialect's own error format
            expected = {"detail"} if path.startswith("/api/v1/") else {"error", "code", "message"}
            allowed = methods | ({"HEAD"} if "GET" in methods else set())  # HEAD is GET's
            if (response.status_code, allow, envelope) != (
                405,
                ", ".join(sorted(allowed)),
                expected,
            ):
                wrong.append((method, path, response.status_code, allow, response.text[:80]))
    assert wrong == [], "\n".join(map(str, wrong))
    # a wrong method on an /{id} path names all of that path's methods too
    response = api.post(f"{API}/cas/987654321")
    assert response.status_code == 405 and response.headers["allow"] == "DELETE, GET, HEAD, PATCH"
