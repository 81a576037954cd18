"""Private keys at rest: after the server has generated and imported keys, no file under the
data directory and no text column of the database holds any of them in the clear."""

import base64
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.e2e.helpers import (
    API,
    create_root,
    data,
    database_values,
    download,
    foreign_root,
    import_ca_file,
    issue,
    unique,
)
from tests.support import Server, admin_api_key, start_server, stop_server
from tests.tools import openssl

PEM_MARKER = b"PRIVATE KEY-----"
# The unencrypted PKCS#8 headers of every key type the server makes (version 0 followed by
# the algorithm identifier): they find keys whose values the test never sees, such as CA keys
# and the TLS key, should any be written in the clear.
PKCS8_HEADERS = {
    "RSA": re.compile(rb"\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00"),
    "EC": re.compile(rb"\x02\x01\x00\x30[\x10\x13]\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"),
    "Ed25519": re.compile(rb"\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20"),
}
SERVER_KEY = Path("tls") / "server.key"


@dataclass(frozen=True)
class Needle:
    label: str
    value: bytes


def needles_for(label: str, key: Any) -> list[Needle]:
    """Every form a leaked key could take: DER (PKCS#8 and traditional), the raw private
    numbers, and their base64 and hex spellings."""
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    found = [Needle(f"{label} PKCS#8 DER", pkcs8)]
    raw: list[bytes] = []
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        for value in (numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp):
            raw.append(value.to_bytes((value.bit_length() + 7) // 8, "big"))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        value = key.private_numbers().private_value
        raw.append(value.to_bytes((key.curve.key_size + 7) // 8, "big"))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        raw.append(
            key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
    else:
        raise AssertionError(f"unexpected key type {type(key)}")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        traditional = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        found.append(Needle(f"{label} traditional DER", traditional))
    for index, value in enumerate(raw):
        found.append(Needle(f"{label} private number {index}", value))
        found.append(Needle(f"{label} private number {index} (hex)", value.hex().encode()))
        found.append(Needle(f"{label} private number {index} (HEX)", value.hex().upper().encode()))
    encoded = base64.b64encode(pkcs8)
    found.append(Needle(f"{label} PKCS#8 base64", encoded[8:72]))
    found.append(Needle(f"{label} PKCS#8 base64url", base64.urlsafe_b64encode(pkcs8)[8:72]))
    return found


def leaks(content: bytes, needles: list[Needle], allow_encrypted_pem: bool = False) -> list[str]:
    """Labels of what `content` gives away."""
    found = [n.label for n in needles if n.value in content]
    markers = content.count(PEM_MARKER)
    if allow_encrypted_pem:
        markers -= content.count(b"ENCRYPTED " + PEM_MARKER)
    if markers:
        found.append("a PEM private key block")
    found += [
        f"unencrypted PKCS#8 {name} key" for name, p in PKCS8_HEADERS.items() if p.search(content)
    ]
    return found


def files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


@pytest.fixture(scope="module")
def keys(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Keys the server generated (RSA, EC, Ed25519) and one it imported from PKCS#12,
    read back through the API so the test knows their values."""
    workdir = tmp_path_factory.mktemp("keys")
    with server.client() as api:
        root = create_root(api, unique("Keys Root"), "EC", 384)
        found: dict[str, Any] = {}
        for algorithm, size in (("RSA", 2048), ("EC", 256), ("Ed25519", None)):
            body: dict[str, Any] = {"key_algorithm": algorithm}
            if size:
                body["key_size"] = size
            cert = issue(api, root["id"], f"{algorithm.lower()}.keys.example.com", **body)
            assert cert["private_key_available"] is True
            exported = download(
                api,
                f"{API}/certificates/{cert['id']}/export",
                format="pem",
                include_key="true",
            ).text
            found[algorithm] = serialization.load_pem_private_key(exported.encode(), password=None)
        foreign = foreign_root(workdir, "/CN=Keys Imported Root/O=Elsewhere", key="rsa:2048")
        imported = data(
            import_ca_file(api, foreign.pkcs12("p12-pass"), "ca.p12", password="p12-pass"), 201
        )
        assert imported["has_private_key"] is True
        # Use the imported key once, so it has been decrypted and used by the server.
        issue(api, imported["id"], "by-imported.keys.example.com")
        found["imported CA"] = serialization.load_pem_private_key(
            foreign.key_pem.encode(), password=None
        )
    return found


def all_needles(keys: dict[str, Any]) -> list[Needle]:
    return [n for label, key in keys.items() for n in needles_for(label, key)]


def test_the_scanner_finds_plaintext_keys(keys: dict[str, Any], tmp_path: Path) -> None:
    """The detector is live: each key, written out the ways a careless server would, is seen."""
    needles = all_needles(keys)
    for label, key in keys.items():
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        assert "a PEM private key block" in leaks(pem, needles), label
        assert f"{label} PKCS#8 DER" in leaks(b"\x00junk" + der + b"junk", needles), label
        assert any(n.endswith("key") and "PKCS#8" in n for n in leaks(der, [])), label
        assert f"{label} PKCS#8 base64" in leaks(base64.b64encode(der), needles), label
    assert leaks(b"nothing to see here", needles) == []


def test_no_plaintext_key_in_data_dir(server: Server, keys: dict[str, Any]) -> None:
    needles = all_needles(keys)
    scanned = []
    findings: dict[str, list[str]] = {}
    for path in [*files_under(server.data_dir), server.log_path]:
        relative = (
            path.relative_to(server.data_dir) if path.is_relative_to(server.data_dir) else path
        )
        found = leaks(path.read_bytes(), needles, allow_encrypted_pem=relative == SERVER_KEY)
        if found:
            findings[str(relative)] = found
        scanned.append(str(relative))
    assert findings == {}
    assert "kek" in scanned and str(SERVER_KEY) in scanned
    if server.database_url is None:
        assert "tessera.db" in scanned
        assert any(name.startswith("tessera.db-") for name in scanned), scanned  # the WAL


def test_no_plaintext_key_in_database_columns(server: Server, keys: dict[str, Any]) -> None:
    needles = all_needles(keys)
    values = database_values(server)
    findings = {column: found for column, value in values if (found := leaks(value, needles))}
    assert findings == {}
    # The keys are there, encrypted: every stored key column holds Fernet tokens.
    stored = [
        value for column, value in values if column.endswith(".encrypted_private_key") and value
    ]
    assert len(stored) >= 3 + 1 + 2  # three leaves, the imported CA, our root, the TLS pair
    assert all(value.startswith(b"gAAAAA") for value in stored)
    columns = {column for column, _ in values}
    assert {
        "certificates.encrypted_private_key",
        "certificate_authorities.encrypted_private_key",
        "audit_logs.details",
    } <= columns


def test_files_in_a_data_directory_made_beforehand_are_private(tmp_path: Path) -> None:
    """An operator's own `mkdir data` is 0755: the database (password digests, the audit
    trail, sealed keys), its WAL and the other files the server makes there are still
    readable by their owner alone."""
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    running = start_server(folder, None)
    try:
        running.api_key = admin_api_key(running)
        with running.client() as api:  # a write, so that the WAL has content
            create_root(api, "Private Files Root")
        made = [path for path in folder.rglob("*") if path.is_file()]
        assert {"tessera.db", "tessera.db-wal", "kek"} <= {path.name for path in made}
        loose = {
            str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077
        }
        assert loose == {}
    finally:
        stop_server(running)


def test_kek_and_tls_key_files(server: Server) -> None:
    kek = server.data_dir / "kek"
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert len(kek.read_bytes().strip()) == 44  # a Fernet key, urlsafe base64 of 32 bytes
    key_file = server.data_dir / SERVER_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) & 0o077 == 0
    content = key_file.read_text()
    assert content.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert content.count("BEGIN") == 1 and content.rstrip().endswith(
        "-----END ENCRYPTED PRIVATE KEY-----"
    )
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(content.encode(), password=None)
    opened = openssl("pkey", "-in", str(key_file), "-passin", "pass:", "-noout")
    assert opened.returncode != 0
    asn1 = openssl("asn1parse", "-in", str(key_file))
    assert asn1.returncode == 0 and b"PBES2" in asn1.stdout, asn1.stdout


def test_exports_still_work_after_the_scan(api: httpx.Client, keys: dict[str, Any]) -> None:
    """The scan is not vacuous: the server still holds (encrypted) keys it can use."""
    listed = data(api.get(f"{API}/certificates", params={"search": "keys.example.com"}))
    assert sum(1 for c in listed if c["private_key_available"]) >= 4
