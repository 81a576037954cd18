"""`/api/v2/import/opnsense/{test,import}` (seed 000, "OPNsense Import") against a stand-in
OPNsense: a firewall cannot run here, so a small HTTPS server in the test speaks the part of
OPNsense's Trust API the import reads (`/api/trust/{ca,cert}/search` and `/get/{uuid}`,
with the API key and secret as basic credentials), the way OPNsense answers it."""

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import API, data, error, unique

PEM = serialization.Encoding.PEM
API_KEY, API_SECRET = "opn-key", "opn-secret"


def _certificate(
    common_name: str, issuer: tuple[x509.Name, Any] | None = None, ca: bool = False
) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _key_pem(key: Any) -> str:
    return key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class Firewall:
    """What the stand-in holds: its internal CA, and a GUI certificate that CA signed."""

    def __init__(self) -> None:
        self.ca, self.ca_key = _certificate(unique("fw-ca"), ca=True)
        self.gui, self.gui_key = _certificate(unique("fw-gui"), (self.ca.subject, self.ca_key))
        ca_pem = self.ca.public_bytes(PEM).decode()
        gui_pem, gui_key_pem = self.gui.public_bytes(PEM).decode(), _key_pem(self.gui_key)
        self.rows = {
            "ca": [{"uuid": "ca-uuid-1", "descr": "Firewall CA", "commonname": "fw"}],
            "cert": [{"uuid": "cert-uuid-1", "descr": "Web GUI", "commonname": "gui"}],
        }
        # As OPNsense sends them: the CA with PEM payloads, the certificate as config.xml
        # keeps it (base64 of the PEM) only.
        self.records = {
            "/api/trust/ca/get/ca-uuid-1": {"ca": {"crt_payload": ca_pem, "prv_payload": ""}},
            "/api/trust/cert/get/cert-uuid-1": {
                "cert": {"crt": _b64(gui_pem), "prv": _b64(gui_key_pem), "descr": "Web GUI"}
            },
        }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _handler(firewall: Firewall) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _authorized(self) -> bool:
            wanted = "Basic " + _b64(f"{API_KEY}:{API_SECRET}")
            if self.headers.get("Authorization") == wanted:
                return True
            self._answer(401, {"status": 401, "message": "Authentication Failed"})
            return False

        def _answer(self, status: int, body: object) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self._authorized():
                return
            kind = self.path.removeprefix("/api/trust/").removesuffix("/search")
            rows = firewall.rows.get(kind)
            if rows is None:
                self._answer(404, {"errorMessage": "Endpoint not found"})
                return
            self._answer(200, {"rows": rows, "rowCount": len(rows), "total": len(rows)})

        def do_GET(self) -> None:
            if self._authorized():
                record = firewall.records.get(self.path)
                self._answer(200 if record else 404, record or {"errorMessage": "not found"})

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def firewall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Firewall, int]]:
    """The stand-in, serving HTTPS on 127.0.0.1 with the GUI certificate (self-signed CA)."""
    held = Firewall()
    workdir = tmp_path_factory.mktemp("opnsense")
    chain, key = workdir / "gui.pem", workdir / "gui.key"
    chain.write_bytes(held.gui.public_bytes(PEM) + held.ca.public_bytes(PEM))
    key.write_text(_key_pem(held.gui_key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(held))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield held, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _connection(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "verify_ssl": False,
        **extra,
    }


def test_test_lists_the_firewalls_cas_and_certificates(
    api: httpx.Client, firewall: tuple[Firewall, int]
) -> None:
    """Both endpoints answered 404: the seed's OPNsense import was missing."""
    _, port = firewall
    listed = data(api.post(f"{API}/import/opnsense/test", json=_connection(port)))
    assert listed == {
        "success": True,
        "items": [
            {"id": "ca-uuid-1", "type": "CA", "name": "Firewall CA"},
            {"id": "cert-uuid-1", "type": "Certificate", "name": "Web GUI"},
        ],
        "stats": {"cas": 1, "certificates": 1},
    }
    refused = api.post(f"{API}/import/opnsense/test", json=_connection(port, api_secret="bad"))
    assert "refused the API key and secret (401)" in error(refused, 400)
    # The firewall's certificate is verified unless the caller says not to.
    unverified = {k: v for k, v in _connection(port).items() if k != "verify_ssl"}
    told = error(api.post(f"{API}/import/opnsense/test", json=unverified), 400)
    assert "CERTIFICATE_VERIFY_FAILED" in told and "verify_ssl" in told
    error(api.post(f"{API}/import/opnsense/test", json=_connection(port, host="a/b")), 400)


def test_import_stores_the_ca_and_the_certificate_with_its_key(
    api: httpx.Client, firewall: tuple[Firewall, int]
) -> None:
    held, port = firewall
    body = {**_connection(port), "import_cas": True, "import_certificates": True}
    done = data(api.post(f"{API}/import/opnsense/import", json=body))
    assert (done["cas_imported"], done["certificates_imported"]) == (1, 1), done
    stored = {r["type"]: r for r in done["results"] if r["status"] == "imported"}
    ca_id, cert_id = stored["ca_certificate"]["id"], stored["certificate"]["id"]
    cert = data(api.get(f"{API}/certificates/{cert_id}"))
    assert cert["ca_id"] == ca_id and cert["private_key_available"] is True
    assert x509.load_pem_x509_certificate(cert["pem"].encode()) == held.gui
    key = data(api.post(f"{API}/certificates/{cert_id}/key", json={}))["private_key"]
    loaded = serialization.load_pem_private_key(key.encode(), None)
    assert loaded.public_key() == held.gui_key.public_key()
    assert data(api.get(f"{API}/cas/{ca_id}"))["subject"] == held.ca.subject.rfc4514_string()
    again = data(api.post(f"{API}/import/opnsense/import", json=body))
    assert again["cas_imported"] == again["certificates_imported"] == 0
    assert {r["status"] for r in again["results"]} <= {"skipped", "linked"}
    none = api.post(f"{API}/import/opnsense/import", json={**body, "items": ["no-such-uuid"]})
    assert error(none, 400) == "OPNsense lists nothing to import"


def test_an_entry_whose_uuid_could_leave_its_path_is_skipped(
    api: httpx.Client, firewall: tuple[Firewall, int]
) -> None:
    """An entry's uuid goes into the path of the request that fetches it: one that is no
    uuid (slashes, dots) is not listed, nor fetched."""
    held, port = firewall
    climbing = {"uuid": "../../../cert/get/cert-uuid-1", "descr": "Climbing", "commonname": "x"}
    held.rows["ca"].append(climbing)
    try:
        listed = data(api.post(f"{API}/import/opnsense/test", json=_connection(port)))
    finally:
        held.rows["ca"].remove(climbing)
    assert [item["id"] for item in listed["items"]] == ["ca-uuid-1", "cert-uuid-1"]
