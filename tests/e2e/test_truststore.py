"""The trust store through /api/v2/truststore: add, list, get, delete, statistics, imports of
PEM bundles, DER and PKCS#7 files made by openssl, and a sync with this machine's CA bundle."""

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import API, data, error, foreign_root, foreign_signed, unique
from tests.e2e.test_auth import audit_rows
from tests.support import Server
from tests.tools import openssl

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
UNKNOWN_ID = 987_654_321


def stats(api: httpx.Client) -> dict[str, int]:
    result: dict[str, int] = data(api.get(f"{API}/truststore/stats"))
    return result


def import_file(api: httpx.Client, content: bytes, filename: str, **fields: str) -> httpx.Response:
    return api.post(
        f"{API}/truststore/import",
        files={"file": (filename, content, "application/octet-stream")},
        data=fields,
    )


def openssl_fingerprint(path: Path) -> str:
    result = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(path))
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip().split("=", 1)[1]


def listed(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every entry, page by page."""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        body = api.get(f"{API}/truststore", params={**params, "page": page, "per_page": 100})
        chunk = data(body)
        rows += chunk
        if len(rows) >= body.json()["meta"]["total"] or not chunk:
            return rows
        page += 1


def built_cert(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = True,
    start: timedelta = timedelta(days=-1),
    end: timedelta = timedelta(days=365),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 certificate made with cryptography, so its dates can lie in the past."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + start)
        .not_valid_after(now + end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return cert, key


def pem_of(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode()


# Add, list, get, delete


def test_add_list_get_delete(api: httpx.Client, workdir: Path) -> None:
    root = foreign_root(workdir, f"/CN={unique('Partner Root')}/O=Partner")
    body = {
        "certificate": root.pem,
        "name": "External Root CA",
        "description": "Third-party CA for partner integration",
    }
    added = data(api.post(f"{API}/truststore", json=body), 201)
    assert added["name"] == "External Root CA"
    assert added["description"] == "Third-party CA for partner integration"
    assert added["source"] == "manual" and added["status"] == "valid"
    assert added["is_root"] is True and added["is_ca"] is True
    assert added["fingerprint_sha256"] == openssl_fingerprint(root.cert_path)
    assert (
        added["subject"]
        == x509.load_pem_x509_certificate(root.pem.encode()).subject.rfc4514_string()
    )

    details = data(api.get(f"{API}/truststore/{added['id']}"))
    assert details["pem"].strip() == root.pem.strip()
    assert details["name"] == added["name"] and details["key_algorithm"] == "EC"
    assert details["serial_number"] == added["serial_number"]
    assert added["id"] in [row["id"] for row in listed(api)]
    page = api.get(f"{API}/truststore", params={"per_page": 1}).json()
    assert page["meta"]["per_page"] == 1 and len(page["data"]) == 1

    duplicate = api.post(f"{API}/truststore", json={**body, "name": "Again"})
    assert "already" in error(duplicate, 409)

    deleted = api.delete(f"{API}/truststore/{added['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    error(api.get(f"{API}/truststore/{added['id']}"), 404)
    error(api.delete(f"{API}/truststore/{added['id']}"), 404)
    # Gone, it can be added again.
    data(api.post(f"{API}/truststore", json=body), 201)


def test_changes_are_audited(server: Server, api: httpx.Client) -> None:
    cert, _ = built_cert(unique("Audited Root"))
    added = data(api.post(f"{API}/truststore", json={"certificate": pem_of(cert)}), 201)
    assert api.delete(f"{API}/truststore/{added['id']}").status_code == 204
    fingerprint = added["fingerprint_sha256"].replace(":", "").lower()
    for action in ("truststore.add", "truststore.delete"):
        rows = audit_rows(server, action, "admin")
        mine = [r for r in rows if r["details"]["fingerprint_sha256"] == fingerprint]
        assert len(mine) == 1 and mine[0]["resource_type"] == "trusted_certificate", action
    imported = data(import_file(api, pem_of(cert).encode(), "again.pem"), 201)
    last = audit_rows(server, "truststore.import", "admin")[-1]["details"]
    assert last == {"added": 1, "skipped": 0, "ids": [imported["certificates"][0]["id"]]}


def test_name_defaults_to_the_certificate(api: httpx.Client, workdir: Path) -> None:
    cn = unique("Nameless Root")
    root = foreign_root(workdir, f"/CN={cn}")
    added = data(api.post(f"{API}/truststore", json={"certificate": root.pem}), 201)
    assert added["name"] == cn and added["common_name"] == cn


def test_keys_tessera_does_not_issue_for_are_still_trusted(api: httpx.Client) -> None:
    key = dsa.generate_private_key(key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique("DSA Root"))])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    added = data(api.post(f"{API}/truststore", json={"certificate": pem_of(cert)}), 201)
    details = data(api.get(f"{API}/truststore/{added['id']}"))
    assert (details["key_algorithm"], details["key_size"]) == ("DSA", 2048)
    assert details["is_root"] is True and details["pem"] == pem_of(cert)


# Imports


def test_import_multi_pem_bundle(api: httpx.Client, workdir: Path) -> None:
    root = foreign_root(workdir, f"/CN={unique('Bundle Root')}")
    intermediate = foreign_signed(workdir, root, f"/CN={unique('Bundle Sub')}")
    leaf = foreign_signed(workdir, intermediate, "/CN=leaf.foreign.test", "v3_leaf", days=365)
    bundle = ("Some text before\n" + root.pem + intermediate.pem + leaf.pem).encode()
    fields = {
        "name": "Partner",
        "purpose": "trust_anchor",
        "description": "Third-party CA",
        "notes": "Optional notes",
    }
    response = import_file(api, bundle, "bundle.pem", **fields)
    result = data(response, 201)
    assert (result["imported"], result["skipped"], result["total"]) == (3, 0, 3)
    entries = {e["fingerprint_sha256"]: e for e in result["certificates"]}
    root_entry = entries[openssl_fingerprint(root.cert_path)]
    sub_entry = entries[openssl_fingerprint(intermediate.cert_path)]
    leaf_entry = entries[openssl_fingerprint(leaf.cert_path)]
    assert (root_entry["is_root"], root_entry["is_ca"]) == (True, True)
    assert (sub_entry["is_root"], sub_entry["is_ca"]) == (False, True)
    assert (leaf_entry["is_root"], leaf_entry["is_ca"]) == (False, False)
    for entry in entries.values():
        assert entry["source"] == "import" and entry["purpose"] == "trust_anchor"
        assert entry["notes"] == "Optional notes" and entry["description"] == "Third-party CA"
        assert entry["name"] == f"Partner: {entry['common_name']}"
    again = data(import_file(api, bundle, "bundle.pem"), 200)
    assert (again["imported"], again["skipped"], again["certificates"]) == (0, 3, [])


def test_import_der_and_pkcs7(api: httpx.Client, workdir: Path) -> None:
    root = foreign_root(workdir, f"/CN={unique('DER Root')}")
    result = data(import_file(api, root.der, "root.cer", name="DER Root"), 201)
    assert result["imported"] == 1
    (entry,) = result["certificates"]
    assert entry["name"] == "DER Root" and entry["fingerprint_sha256"] == openssl_fingerprint(
        root.cert_path
    )
    other = foreign_root(workdir, f"/CN={unique('P7 Root')}")
    sub = foreign_signed(workdir, other, f"/CN={unique('P7 Sub')}")
    chain = workdir / "p7-chain.pem"
    chain.write_text(other.pem + sub.pem)
    p7 = openssl("crl2pkcs7", "-nocrl", "-certfile", str(chain), "-outform", "DER")
    assert p7.returncode == 0, p7.stderr.decode()
    result = data(import_file(api, p7.stdout, "chain.p7b"), 201)
    assert result["imported"] == 2
    fingerprints = {e["fingerprint_sha256"] for e in result["certificates"]}
    assert fingerprints == {
        openssl_fingerprint(other.cert_path),
        openssl_fingerprint(sub.cert_path),
    }
    # A duplicate inside one upload is skipped, too.
    twice = data(import_file(api, (other.pem + other.pem).encode(), "twice.pem"), 200)
    assert (twice["imported"], twice["skipped"]) == (0, 2)


def test_garbage_is_400_and_adds_nothing(api: httpx.Client, workdir: Path) -> None:
    before = stats(api)
    root = foreign_root(workdir, f"/CN={unique('Garbage Test')}")
    truncated = root.pem[: len(root.pem) // 2] + "\n-----END CERTIFICATE-----\n"
    for text in (
        "garbage",
        truncated,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ):
        error(api.post(f"{API}/truststore", json={"certificate": text}), 400)
    error(import_file(api, b"\x00\x01garbage", "garbage.bin"), 400)
    error(import_file(api, b"", "empty.pem"), 400)
    error(import_file(api, truncated.encode(), "truncated.pem"), 400)
    second = foreign_root(workdir, f"/CN={unique('Second')}")
    two = {"certificate": root.pem + second.pem}
    assert "import" in error(api.post(f"{API}/truststore", json=two), 400)
    error(api.post(f"{API}/truststore", json={"certificate": ""}), 422)
    error(api.post(f"{API}/truststore", json={"name": "no certificate"}), 422)
    error(api.get(f"{API}/truststore", params={"source": "elsewhere"}), 400)
    error(api.get(f"{API}/truststore/{UNKNOWN_ID}"), 404)
    assert stats(api) == before


def openssl_out(*args: str) -> bytes:
    result = openssl(*args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def trusted_pem(cert: Path, *settings: str) -> bytes:
    """`openssl x509 -trustout`: the certificate, then OpenSSL's trust settings for it."""
    return openssl_out("x509", "-in", str(cert), "-trustout", *settings)


def test_pkcs12_files_are_added_and_imported(api: httpx.Client, workdir: Path) -> None:
    """A PKCS#12 file, under a password or none, made by `openssl pkcs12 -export`, with or
    without a key: its certificates are trusted, the key is not kept."""
    before = stats(api)
    only_cert = foreign_root(workdir, f"/CN={unique('P12 Trust Anchor')}")
    nokeys = openssl_out(
        "pkcs12", "-export", "-nokeys", "-in", str(only_cert.cert_path), "-passout", "pass:p12-pw"
    )
    assert "password" in error(import_file(api, nokeys, "anchor.p12"), 400)
    wrong = import_file(api, nokeys, "anchor.p12", password="not-it")
    assert "password" in error(wrong, 400)
    assert stats(api) == before
    result = data(import_file(api, nokeys, "anchor.p12", password="p12-pw", name="P12"), 201)
    (entry,) = result["certificates"]
    assert entry["fingerprint_sha256"] == openssl_fingerprint(only_cert.cert_path)
    assert entry["name"] == "P12" and entry["source"] == "import"

    with_key = foreign_root(workdir, f"/CN={unique('P12 Keyed Root')}")
    body = {"certificate": base64.b64encode(with_key.pkcs12("key-pw")).decode()}
    error(api.post(f"{API}/truststore", json=body), 400)
    added = data(api.post(f"{API}/truststore", json={**body, "password": "key-pw"}), 201)
    assert added["fingerprint_sha256"] == openssl_fingerprint(with_key.cert_path)
    assert "PRIVATE KEY" not in data(api.get(f"{API}/truststore/{added['id']}"))["pem"]

    no_password = foreign_root(workdir, f"/CN={unique('P12 Open Root')}")
    open_p12 = openssl_out(
        "pkcs12", "-export", "-nokeys", "-in", str(no_password.cert_path), "-passout", "pass:"
    )
    added = data(
        api.post(
            f"{API}/truststore",
            json={"certificate": f"BASE64:{base64.b64encode(open_p12).decode()}"},
        ),
        201,
    )
    assert added["fingerprint_sha256"] == openssl_fingerprint(no_password.cert_path)

    # A leaf with its chain is several certificates: one add takes one, an import all.
    sub = foreign_signed(workdir, with_key, f"/CN={unique('P12 Sub')}")
    chained = sub.pkcs12("chain-pw", chain=[with_key])
    both = {"certificate": base64.b64encode(chained).decode(), "password": "chain-pw"}
    assert "import" in error(api.post(f"{API}/truststore", json=both), 400)
    imported = data(import_file(api, chained, "chain.pfx", password="chain-pw"), 201)
    assert (imported["imported"], imported["skipped"]) == (1, 1)
    assert imported["certificates"][0]["fingerprint_sha256"] == openssl_fingerprint(sub.cert_path)
    after = stats(api)
    assert after["total"] - before["total"] == 4


def test_openssl_trusted_certificates_are_added_and_imported(
    api: httpx.Client, workdir: Path
) -> None:
    """The TRUSTED CERTIFICATE form (`openssl x509 -trustout`): the certificate is trusted
    and stored as a plain certificate; trust settings naming rejected purposes are refused
    rather than widened into full trust."""
    before = stats(api)
    root = foreign_root(workdir, f"/CN={unique('Trustout Root')}")
    pem = trusted_pem(root.cert_path, "-addtrust", "serverAuth", "-setalias", "partner root")
    assert pem.startswith(b"-----BEGIN TRUSTED CERTIFICATE-----")
    added = data(api.post(f"{API}/truststore", json={"certificate": pem.decode()}), 201)
    assert added["fingerprint_sha256"] == openssl_fingerprint(root.cert_path)
    stored = data(api.get(f"{API}/truststore/{added['id']}"))["pem"]
    assert stored.strip() == root.pem.strip()

    other = foreign_root(workdir, f"/CN={unique('Trustout Other')}")
    sub = foreign_signed(workdir, other, f"/CN={unique('Trustout Sub')}")
    bundle = trusted_pem(other.cert_path) + trusted_pem(
        sub.cert_path, "-addtrust", "anyExtendedKeyUsage"
    )
    result = data(import_file(api, bundle, "trusted.pem"), 201)
    assert {e["fingerprint_sha256"] for e in result["certificates"]} == {
        openssl_fingerprint(other.cert_path),
        openssl_fingerprint(sub.cert_path),
    }

    refused_root = foreign_root(workdir, f"/CN={unique('Trustout Rejected')}")
    rejecting = trusted_pem(
        refused_root.cert_path, "-addtrust", "serverAuth", "-addreject", "emailProtection"
    )
    message = error(api.post(f"{API}/truststore", json={"certificate": rejecting.decode()}), 400)
    assert "reject" in message
    assert "reject" in error(import_file(api, rejecting, "rejecting.pem"), 400)
    # Bytes after the trust settings are no trust settings.
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1])) + b"\x05\x00"
    body = base64.encodebytes(der).decode()
    garbled = f"-----BEGIN TRUSTED CERTIFICATE-----\n{body}-----END TRUSTED CERTIFICATE-----\n"
    assert "trust settings" in error(
        api.post(f"{API}/truststore", json={"certificate": garbled}), 400
    )
    # Settings whose `other` [1] holds a REAL where OpenSSL has AlgorithmIdentifiers.
    plain = base64.b64decode("".join(root.pem.strip().splitlines()[1:-1]))
    odd = base64.encodebytes(plain + bytes.fromhex("3005a103090140")).decode()
    odd_pem = f"-----BEGIN TRUSTED CERTIFICATE-----\n{odd}-----END TRUSTED CERTIFICATE-----\n"
    assert "trust settings" in error(
        api.post(f"{API}/truststore", json={"certificate": odd_pem}), 400
    )
    assert stats(api)["total"] - before["total"] == 3


# Statistics


def test_stats_count_roots_intermediates_expired_and_valid(api: httpx.Client) -> None:
    before = stats(api)
    live_root = built_cert(unique("Live Root"))
    expired_name = unique("Expired Root")
    expired_root = built_cert(expired_name, start=timedelta(days=-730), end=timedelta(days=-365))
    intermediate = built_cert(unique("Intermediate"), issuer=live_root)
    leaf = built_cert("pinned.example.com", issuer=intermediate, ca=False)
    for cert, _ in (live_root, expired_root, intermediate, leaf):
        data(api.post(f"{API}/truststore", json={"certificate": pem_of(cert)}), 201)
    after = stats(api)
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        "total": 4,
        "root_ca": 2,
        "intermediate_ca": 1,
        "expired": 1,
        "valid": 3,
        "not_yet_valid": 0,
    }
    expired = [e["status"] for e in listed(api) if e["common_name"] == expired_name]
    assert expired == ["expired"]


def test_stats_count_a_not_yet_valid_certificate_apart(api: httpx.Client) -> None:
    """A certificate whose notBefore is still ahead is neither valid nor expired: the stats
    count it as not_yet_valid, so that expired, valid and not_yet_valid add up to total."""
    before = stats(api)
    future_name = unique("Future Root")
    future, _ = built_cert(future_name, start=timedelta(days=30), end=timedelta(days=400))
    added = data(api.post(f"{API}/truststore", json={"certificate": pem_of(future)}), 201)
    assert added["status"] == "not_yet_valid"
    after = stats(api)
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        "total": 1,
        "root_ca": 1,
        "intermediate_ca": 0,
        "expired": 0,
        "valid": 0,
        "not_yet_valid": 1,
    }
    assert after["total"] == after["expired"] + after["valid"] + after["not_yet_valid"]


def test_a_pinned_self_signed_leaf_is_no_root_ca(api: httpx.Client) -> None:
    """A self-signed end-entity certificate (CA:FALSE, a pinned server) is trusted, and
    counted as valid, but it is neither a root nor an intermediate CA."""
    before = stats(api)
    leaf, _ = built_cert(unique("pinned-self-signed.example.com"), ca=False)
    added = data(api.post(f"{API}/truststore", json={"certificate": pem_of(leaf)}), 201)
    assert (added["is_root"], added["is_ca"]) == (False, False)
    after = stats(api)
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        "total": 1,
        "root_ca": 0,
        "intermediate_ca": 0,
        "expired": 0,
        "valid": 1,
        "not_yet_valid": 0,
    }


def test_read_only_key_cannot_change_the_store(server: Server, api: httpx.Client) -> None:
    body = {"name": "trust reader", "permissions": ["read:truststore"]}
    key = data(api.post("/api/v2/account/apikeys", json=body), 201)["key"]
    cert, _ = built_cert(unique("Guarded Root"))
    added = data(api.post(f"{API}/truststore", json={"certificate": pem_of(cert)}), 201)
    with server.client(api_key=key) as reader:
        assert data(reader.get(f"{API}/truststore/{added['id']}"))["id"] == added["id"]
        assert isinstance(data(reader.get(f"{API}/truststore/stats"))["total"], int)
        other, _ = built_cert(unique("Refused Root"))
        refused = reader.post(f"{API}/truststore", json={"certificate": pem_of(other)})
        assert "write:truststore" in error(refused, 403)
        error(reader.post(f"{API}/truststore/sync"), 403)
        assert "delete:truststore" in error(reader.delete(f"{API}/truststore/{added['id']}"), 403)


# Sync with the operating system's bundle


def test_sync_with_the_system_bundle_is_idempotent(server: Server, api: httpx.Client) -> None:
    in_bundle = SYSTEM_BUNDLE.read_text().count("-----BEGIN CERTIFICATE-----")
    assert in_bundle > 100, "the ca-certificates package provides the system bundle"
    before = stats(api)
    first = data(api.post(f"{API}/truststore/sync"))
    assert first["source"] == "system"
    assert first["added"] > 100
    assert first["added"] + first["skipped"] + first["failed"] == first["total"] == in_bundle
    after_first = stats(api)
    assert after_first["total"] == before["total"] + first["added"]
    assert after_first["root_ca"] - before["root_ca"] > 100

    second = data(api.post(f"{API}/truststore/sync"))
    assert second["added"] == 0
    assert second["skipped"] == first["added"] + first["skipped"]
    assert stats(api) == after_first

    system = listed(api, source="system")
    assert len(system) == first["added"]
    assert all(e["source"] == "system" and e["purpose"] == "trust_anchor" for e in system)
    assert all(e["is_ca"] for e in system)
    bundle_fingerprints = set()
    for block in SYSTEM_BUNDLE.read_text().split("-----END CERTIFICATE-----")[:-1]:
        body = block.split("-----BEGIN CERTIFICATE-----")[1]
        der = base64.b64decode("".join(body.split()))
        bundle_fingerprints.add(hashlib.sha256(der).digest().hex(":").upper())
    assert {e["fingerprint_sha256"] for e in system} <= bundle_fingerprints
    # A root of the bundle has a negative serial: read on purpose, not worth a warning.
    assert "CryptographyDeprecationWarning" not in server.log()
