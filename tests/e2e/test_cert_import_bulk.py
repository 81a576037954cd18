"""Certificate import, private-key export, export of everything and bulk operations through
/api/v2/certificates: every export format read back by openssl and imported again (after a
delete) to the same fingerprint; imports of openssl-made certificates and keys; bulk
revoke, renew, delete and export on mixes of good and bad ids."""

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization

from tests.e2e.helpers import (
    API,
    cert_of,
    create_intermediate,
    create_root,
    data,
    db_rows,
    download,
    error,
    foreign_root,
    foreign_signed,
    issue,
    unique,
)
from tests.support import Server
from tests.tools import openssl, openssl_csr, pem_blocks

UNKNOWN_ID = 987_654_321
P12_PASSWORD = "round-trip-pass"


@pytest.fixture(scope="module")
def issuing(server: Server) -> dict[str, Any]:
    with server.client() as api:
        root = create_root(api, unique("Import Root"), "EC", 256)
        inter = create_intermediate(api, root["id"], unique("Import Issuing"))
        return {"root": root, "inter": inter}


def import_file(
    api: httpx.Client, content: bytes, filename: str = "upload.bin", **fields: str
) -> httpx.Response:
    return api.post(
        f"{API}/certificates/import",
        files={"file": (filename, content, "application/octet-stream")},
        data=fields,
    )


def fingerprint(api: httpx.Client, cert_id: int) -> str:
    return str(data(api.get(f"{API}/certificates/{cert_id}"))["fingerprint_sha256"])


def openssl_fingerprints(workdir: Path, pem_text: bytes) -> list[str]:
    """SHA-256 fingerprints, as openssl prints them, of every certificate in a PEM text."""
    found = []
    for index, block in enumerate(pem_blocks(pem_text.decode())):
        path = workdir / f"fp-{index}.pem"
        path.write_text(block)
        result = openssl("x509", "-in", str(path), "-noout", "-fingerprint", "-sha256")
        assert result.returncode == 0, result.stderr.decode()
        found.append(result.stdout.decode().strip().split("=", 1)[1])
    return found


def openssl_reads(workdir: Path, fmt: str, content: bytes) -> bytes:
    """The certificates of an export as PEM, read by the openssl command for its format."""
    path = workdir / f"export.{fmt}"
    path.write_bytes(content)
    commands = {
        "pem": ["x509", "-in", str(path)],
        "pem-with-key": ["x509", "-in", str(path)],
        "der": ["x509", "-inform", "DER", "-in", str(path)],
        "chain": ["crl2pkcs7", "-nocrl", "-certfile", str(path)],
        "pkcs12": ["pkcs12", "-in", str(path), "-nokeys", "-passin", f"pass:{P12_PASSWORD}"],
        "pkcs7": ["pkcs7", "-print_certs", "-in", str(path)],
        "pkcs7-der": ["pkcs7", "-print_certs", "-inform", "DER", "-in", str(path)],
    }
    result = openssl(*commands[fmt])
    assert result.returncode == 0, result.stderr.decode()
    if fmt == "chain":  # through PKCS#7 and back, so openssl reads every certificate
        again = openssl("pkcs7", "-print_certs", input=result.stdout)
        assert again.returncode == 0, again.stderr.decode()
        return again.stdout
    return result.stdout


EXPORTS = {
    "pem": ({"format": "pem"}, 1, False),
    "pem-with-key": ({"format": "pem", "include_key": "true"}, 1, True),
    "der": ({"format": "der"}, 1, False),
    "chain": ({"format": "chain"}, 3, False),
    "pkcs12": ({"format": "pkcs12", "password": P12_PASSWORD}, 3, True),
    "pkcs7": ({"format": "pkcs7"}, 3, False),
    "pkcs7-der": ({"format": "pkcs7-der"}, 3, False),
}


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_every_export_format_round_trips_through_openssl_and_import(
    api: httpx.Client, workdir: Path, issuing: dict[str, Any], fmt: str
) -> None:
    params, count, with_key = EXPORTS[fmt]
    cert = issue(
        api, issuing["inter"]["id"], f"{fmt}.round-trip.example", key_algorithm="RSA", key_size=2048
    )
    original = fingerprint(api, cert["id"])
    exported = download(api, f"{API}/certificates/{cert['id']}/export", **params).content
    read = openssl_reads(workdir, fmt, exported)
    fingerprints = openssl_fingerprints(workdir, read)
    assert len(fingerprints) == count and original in fingerprints
    if count == 3:
        chain_ids = [issuing["inter"]["id"], issuing["root"]["id"]]
        for ca_id in chain_ids:
            ca_pem = data(api.get(f"{API}/cas/{ca_id}"))["pem"]
            assert cert_of(ca_pem).fingerprint(hashes.SHA256()).hex(":").upper() in fingerprints

    # Imported again (after a delete) it is the same certificate, linked to its issuer.
    assert api.delete(f"{API}/certificates/{cert['id']}").status_code == 204
    fields = {"password": P12_PASSWORD} if fmt == "pkcs12" else {}
    response = import_file(api, exported, f"upload.{fmt}", **fields)
    imported = data(response, 201)
    assert response.json()["message"].endswith("imported successfully")
    assert imported["source"] == "import"
    assert fingerprint(api, imported["id"]) == original
    assert imported["ca_id"] == issuing["inter"]["id"]
    assert imported["private_key_available"] is with_key
    assert imported["serial_number"] == cert["serial_number"]
    # Once more is a duplicate.
    assert "already present" in error(import_file(api, exported, "again", **fields), 409)


def test_import_json_with_key_stores_it_encrypted_and_exports_it_audited(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    root = foreign_root(workdir, f"/CN={unique('JSON Root')}")
    leaf = foreign_signed(workdir, root, "/CN=json.import.example", "v3_leaf", "rsa:2048")
    body = {"certificate": leaf.pem, "private_key": leaf.key_pem, "name": "JSON Leaf"}
    response = api.post(f"{API}/certificates/import", json=body)
    imported = data(response, 201)
    assert response.json()["message"] == 'Certificate "JSON Leaf" imported successfully'
    assert imported["descr"] == "JSON Leaf" and imported["private_key_available"] is True
    assert imported["ca_id"] is None  # its issuer is not here
    assert imported["subject"] == "CN=json.import.example"

    stored = db_rows(
        server, "SELECT encrypted_private_key FROM certificates WHERE id = ?", imported["id"]
    )[0][0]
    der = serialization.load_pem_private_key(leaf.key_pem.encode(), None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert stored.startswith("gAAAAA") and "PRIVATE KEY" not in stored  # a Fernet token
    assert der.hex() not in stored and der not in stored.encode()

    path = f"{API}/certificates/{imported['id']}/key"
    plain = data(api.post(path, json={}))
    assert plain["encrypted"] is False and "BEGIN PRIVATE KEY" in plain["private_key"]
    (workdir / "out.key").write_text(plain["private_key"])
    same = openssl("pkey", "-in", str(workdir / "out.key"), "-pubout")
    theirs = openssl("pkey", "-in", str(leaf.key_path), "-pubout")
    assert same.returncode == 0 and same.stdout == theirs.stdout

    locked = data(api.post(path, json={"passphrase": "key-pass"}))
    assert locked["encrypted"] and "BEGIN ENCRYPTED PRIVATE KEY" in locked["private_key"]
    (workdir / "locked.key").write_text(locked["private_key"])
    opened = openssl(
        "pkey", "-in", str(workdir / "locked.key"), "-passin", "pass:key-pass", "-pubout"
    )
    assert opened.returncode == 0 and opened.stdout == theirs.stdout
    wrong = openssl("pkey", "-in", str(workdir / "locked.key"), "-passin", "pass:nope")
    assert wrong.returncode != 0
    no_body = data(api.post(path))
    assert no_body["encrypted"] is False

    actions = [
        row[0]
        for row in db_rows(
            server,
            "SELECT action FROM audit_logs WHERE resource_type = ? AND resource_id = ?",
            "certificate",
            str(imported["id"]),
        )
    ]
    assert actions.count("certificate.import") == 1
    assert actions.count("certificate.export_key") == 3


def test_key_endpoint_refusals(api: httpx.Client, issuing: dict[str, Any], workdir: Path) -> None:
    root = foreign_root(workdir, f"/CN={unique('Keyless Root')}")
    leaf = foreign_signed(workdir, root, "/CN=keyless.example", "v3_leaf")
    keyless = data(api.post(f"{API}/certificates/import", json={"certificate": leaf.pem}), 201)
    assert keyless["private_key_available"] is False
    assert "no private key" in error(api.post(f"{API}/certificates/{keyless['id']}/key"), 404)
    error(api.post(f"{API}/certificates/{UNKNOWN_ID}/key", json={}), 404)
    with_key = issue(api, issuing["inter"]["id"], "long-pass.example")
    long_pass = {"passphrase": "x" * 1024}
    assert "passphrase" in error(
        api.post(f"{API}/certificates/{with_key['id']}/key", json=long_pass), 400
    )
    error(api.post(f"{API}/certificates/{with_key['id']}/key", json={"passphrase": 5}), 422)


def test_import_formats_and_text_around_pem(api: httpx.Client, workdir: Path) -> None:
    root = foreign_root(workdir, f"/CN={unique('Formats Root')}")
    leaves = [foreign_signed(workdir, root, f"/CN=f{i}.example", "v3_leaf") for i in range(4)]
    noisy = f"subject=CN = f0.example\nissuer=whatever\n{leaves[0].pem}\ntrailing words\n"
    assert data(import_file(api, noisy.encode(), "noisy.crt"), 201)["common_name"] == "f0.example"
    assert data(import_file(api, leaves[1].der, "leaf.der"), 201)["common_name"] == "f1.example"
    p12 = leaves[2].pkcs12("p12-pass", chain=[root])
    wrong = import_file(api, p12, "leaf.p12", password="wrong")
    assert "password" in error(wrong, 400)
    from_p12 = data(import_file(api, p12, "leaf.p12", password="p12-pass"), 201)
    assert from_p12["common_name"] == "f2.example" and from_p12["private_key_available"]
    bundle = workdir / "bundle.pem"
    bundle.write_text(root.pem + leaves[3].pem)
    p7 = openssl("crl2pkcs7", "-nocrl", "-certfile", str(bundle), "-outform", "DER")
    assert p7.returncode == 0
    from_p7 = data(import_file(api, p7.stdout, "chain.p7b"), 201)
    assert from_p7["common_name"] == "f3.example"  # the end entity, not the root beside it
    not_key = import_file(api, p12, "leaf.p12", password="p12-pass", import_key="false")
    error(not_key, 409)  # the same certificate again, whether or not its key is wanted


def test_a_key_not_wanted_is_not_opened(api: httpx.Client, workdir: Path) -> None:
    """`import_key=false` keeps the certificate of a file that holds an encrypted key too
    (`openssl req -keyout` and `-out` to one file): the key is not wanted, so it needs no
    password; it was a 400 "a password is required", and the certificate was not imported.
    Each form alike: PEM with the key, and a `private_key` field is still always read."""
    root = foreign_root(workdir, f"/CN={unique('Unwanted Key Root')}")
    leaf = foreign_signed(workdir, root, "/CN=unwanted-key.example", "v3_leaf")
    sealed = openssl("pkcs8", "-topk8", "-in", str(leaf.key_path), "-passout", "pass:secret")
    assert sealed.returncode == 0, sealed.stderr.decode()
    content = (leaf.pem + sealed.stdout.decode()).encode()
    imported = data(import_file(api, content, "leaf.pem", import_key="false"), 201)
    assert imported["common_name"] == "unwanted-key.example"
    assert imported["private_key_available"] is False
    body = {"certificate": content.decode(), "import_key": False, "private_key": "garbage"}
    assert "not a private key" in error(api.post(f"{API}/certificates/import", json=body), 400)
    sealed_root = openssl("pkcs8", "-topk8", "-in", str(root.key_path), "-passout", "pass:x")
    assert sealed_root.returncode == 0, sealed_root.stderr.decode()
    ca_file = {"file": ("root.pem", root.pem + sealed_root.stdout.decode())}
    ca = data(api.post(f"{API}/cas/import", files=ca_file, data={"import_key": "false"}), 201)
    assert ca["has_private_key"] is False


def test_pkcs12_without_a_key_imports_its_certificate(api: httpx.Client, workdir: Path) -> None:
    """`openssl pkcs12 -export -nokeys` (a PKCS#12 of certificates only, as Java trust stores
    are) holds no key bag, so no certificate is tied to one: its end entity is imported, and
    a file of one CA certificate is detected as a CA."""
    root = foreign_root(workdir, f"/CN={unique('Keyless P12 Root')}")
    leaf = foreign_signed(workdir, root, "/CN=keyless-p12.example", "v3_leaf")

    def keyless_p12(*certs: Any) -> bytes:
        bundle = workdir / f"{unique('keyless')}.pem"
        bundle.write_text("".join(c.pem for c in certs))
        made = openssl(
            "pkcs12", "-export", "-nokeys", "-in", str(bundle), "-passout", "pass:p12-pass"
        )
        assert made.returncode == 0, made.stderr.decode()
        return made.stdout

    imported = data(import_file(api, keyless_p12(root, leaf), "c.p12", password="p12-pass"), 201)
    assert imported["common_name"] == "keyless-p12.example"
    assert imported["private_key_available"] is False
    response = import_file(api, keyless_p12(root), "root.p12", password="p12-pass")
    assert data(response, 201)["is_root"] is True
    assert "(detected as CA)" in response.json()["message"]


def test_ca_certificate_is_detected_and_leaves_link_to_it(api: httpx.Client, workdir: Path) -> None:
    name = unique("Detected Root")
    root = foreign_root(workdir, f"/CN={name}")
    response = import_file(api, root.pem.encode(), "root.pem", name="Detected")
    ca = data(response, 201)
    assert response.json()["message"] == (
        'CA certificate "Detected" imported successfully (detected as CA)'
    )
    assert ca["is_root"] is True and ca["imported"] is True and ca["name"] == "Detected"
    assert any(c["id"] == ca["id"] for c in data(api.get(f"{API}/cas", params={"per_page": 100})))
    error(import_file(api, root.pem.encode(), "root.pem"), 409)

    leaf = foreign_signed(workdir, root, "/CN=linked.example", "v3_leaf")
    linked = data(import_file(api, leaf.pem.encode(), "leaf.pem"), 201)
    assert linked["ca_id"] == ca["id"]
    listed = data(api.get(f"{API}/cas/{ca['id']}/certificates"))
    assert [c["id"] for c in listed] == [linked["id"]]

    other = foreign_root(workdir, f"/CN={unique('Other Root')}")
    other_ca = data(import_file(api, other.pem.encode(), "other.pem"), 201)
    leaf2 = foreign_signed(workdir, root, "/CN=explicit.example", "v3_leaf")
    refused = import_file(api, leaf2.pem.encode(), "leaf.pem", ca_id=str(other_ca["id"]))
    assert "not issued by" in error(refused, 422)
    error(import_file(api, leaf2.pem.encode(), "leaf.pem", ca_id=str(UNKNOWN_ID)), 404)
    error(import_file(api, leaf2.pem.encode(), "leaf.pem", ca_id="abc"), 400)
    explicit = data(import_file(api, leaf2.pem.encode(), "leaf.pem", ca_id=str(ca["id"])), 201)
    assert explicit["ca_id"] == ca["id"]


def test_ca_detected_on_import_counts_the_certificates_it_adopted(
    api: httpx.Client, workdir: Path
) -> None:
    """Certificates imported before their issuer are filed under it when it comes: the CA
    the import answers with counts them (certificates_count), as the CA list then does."""
    root = foreign_root(workdir, f"/CN={unique('Adopting Root')}")
    for index in range(2):
        leaf = foreign_signed(workdir, root, f"/CN=adopted-{index}.example", "v3_leaf")
        assert data(import_file(api, leaf.pem.encode(), "leaf.pem"), 201)["ca_id"] is None
    ca = data(import_file(api, root.pem.encode(), "root.pem"), 201)
    listed = data(api.get(f"{API}/cas", params={"per_page": 100}))
    assert [c["certificates_count"] for c in listed if c["id"] == ca["id"]] == [2]
    assert ca["certificates_count"] == 2


def test_import_refusals_write_nothing(server: Server, api: httpx.Client, workdir: Path) -> None:
    root = foreign_root(workdir, f"/CN={unique('Refusal Root')}")
    leaf = foreign_signed(workdir, root, "/CN=refused.example", "v3_leaf")
    other = foreign_signed(workdir, root, "/CN=other.example", "v3_leaf")
    before = data(api.get(f"{API}/certificates/stats"))["total"]
    mismatch = {"certificate": leaf.pem, "private_key": other.key_pem}
    assert "does not belong" in error(api.post(f"{API}/certificates/import", json=mismatch), 422)
    error(api.post(f"{API}/certificates/import", json={"certificate": "not a certificate"}), 400)
    error(api.post(f"{API}/certificates/import", json={"name": "nothing"}), 400)
    lone_surrogate = b'{"certificate": "\\ud800", "password": "\\udfff"}'
    headers = {"Content-Type": "application/json"}
    error(api.post(f"{API}/certificates/import", content=lone_surrogate, headers=headers), 400)
    error(import_file(api, b"", "empty.pem"), 400)
    error(import_file(api, b"\x30\x82\x01\x00" + b"\x00" * 64, "junk.der"), 400)
    error(import_file(api, leaf.pem.encode(), "x.pem", name="n" * 201), 400)
    assert data(api.get(f"{API}/certificates/stats"))["total"] == before

    # An API key without write:cas may import certificates but not CA certificates.
    narrow = data(
        api.post(
            f"{API}/account/apikeys",
            json={
                "name": unique("narrow"),
                "permissions": ["read:certificates", "write:certificates"],
            },
        ),
        201,
    )["key"]
    with server.client(api_key=narrow) as limited:
        refused = import_file(limited, root.pem.encode(), "root.pem")
        assert "write:cas" in error(refused, 403)
        assert data(import_file(limited, leaf.pem.encode(), "leaf.pem"), 201)["ca_id"] is None


# --- exports of everything -----------------------------------------------------------------


def test_export_all(api: httpx.Client, workdir: Path, issuing: dict[str, Any]) -> None:
    issue(api, issuing["inter"]["id"], "export-all.example")
    total = data(api.get(f"{API}/certificates/stats"))["total"]
    bundle = download(api, f"{API}/certificates/export")
    assert bundle.headers["content-type"].startswith("application/x-pem-file")
    assert 'filename="certificates.pem"' in bundle.headers["content-disposition"]
    assert bundle.text.count("BEGIN CERTIFICATE") == total
    p7 = download(api, f"{API}/certificates/export", format="pkcs7").content
    printed = openssl("pkcs7", "-print_certs", input=p7)
    assert printed.returncode == 0 and printed.stdout.count(b"BEGIN CERTIFICATE") == total
    error(api.get(f"{API}/certificates/export", params={"format": "pkcs12"}), 400)


# --- bulk ----------------------------------------------------------------------------------


def test_bulk_revoke_mixed_ids(api: httpx.Client, issuing: dict[str, Any]) -> None:
    first = issue(api, issuing["inter"]["id"], "bulk-revoke-1.example")
    second = issue(api, issuing["inter"]["id"], "bulk-revoke-2.example")
    gone = issue(api, issuing["inter"]["id"], "bulk-revoke-3.example")
    data(api.post(f"{API}/certificates/{gone['id']}/revoke", json={"reason": "superseded"}))
    path = f"{API}/certificates/bulk/revoke"
    error(api.post(path, json={"ids": [first["id"]], "reason": "flying"}), 400)
    assert data(api.get(f"{API}/certificates/{first['id']}"))["status"] == "active"
    body = {"ids": [first["id"], UNKNOWN_ID, second["id"], gone["id"]], "reason": "keyCompromise"}
    result = data(api.post(path, json=body))
    assert result["success"] == [first["id"], second["id"]]
    assert result["failed"] == [UNKNOWN_ID, gone["id"]]
    assert {e["id"] for e in result["errors"]} == {UNKNOWN_ID, gone["id"]}
    for cert in (first, second):
        shown = data(api.get(f"{API}/certificates/{cert['id']}"))
        assert shown["status"] == "revoked" and shown["revocation_reason"] == "keyCompromise"
    assert data(api.get(f"{API}/certificates/{gone['id']}"))["revocation_reason"] == "superseded"
    error(api.post(path, json={"ids": []}), 422)


def test_bulk_renew_mixed_ids(api: httpx.Client, workdir: Path, issuing: dict[str, Any]) -> None:
    ours = issue(api, issuing["inter"]["id"], "bulk-renew.example", validity_days=30)
    root = foreign_root(workdir, f"/CN={unique('Renew Root')}")
    foreign = foreign_signed(workdir, root, "/CN=foreign-renew.example", "v3_leaf", "rsa:2048")
    imported = data(api.post(f"{API}/certificates/import", json={"certificate": foreign.pem}), 201)
    path = f"{API}/certificates/bulk/renew"
    result = data(api.post(path, json={"ids": [ours["id"], UNKNOWN_ID, imported["id"]]}))
    assert result["success"] == [ours["id"]]
    assert result["failed"] == [UNKNOWN_ID, imported["id"]]
    (renewed,) = result["renewed"]
    assert renewed["id"] == ours["id"]
    new = data(api.get(f"{API}/certificates/{renewed['new_id']}"))
    assert new["common_name"] == "bulk-renew.example" and new["ca_id"] == issuing["inter"]["id"]
    assert new["serial_number"] != ours["serial_number"]

    # Under another CA, named in the request: the new certificate is issued by it.
    other = create_root(api, unique("Renew Target"))
    moved = data(api.post(path, json={"ids": [ours["id"], imported["id"]], "ca_id": other["id"]}))
    assert moved["success"] == [ours["id"], imported["id"]], moved["errors"]
    for item in moved["renewed"]:
        renewed_row = data(api.get(f"{API}/certificates/{item['new_id']}"))
        assert renewed_row["ca_id"] == other["id"] and renewed_row["issuer"] == other["subject"]
    error(api.post(path, json={"ids": [ours["id"]], "ca_id": UNKNOWN_ID}), 404)
    data(api.patch(f"{API}/cas/{other['id']}", json={"is_active": False}))
    error(api.post(path, json={"ids": [ours["id"]], "ca_id": other["id"]}), 422)


def test_bulk_renew_follows_the_single_renewal_rule(
    api: httpx.Client, workdir: Path, issuing: dict[str, Any]
) -> None:
    """Bulk and single renewal decide alike (both go through one renewal function): a key
    revoked as compromised is certified again by neither, whichever certificate holds it,
    and is reported in `failed` with the single renewal's reason; a certificate revoked for
    another reason, or whose server-held key is replaced, renews in both."""
    _, csr = openssl_csr(workdir, f"/CN={unique('bulk-compromised')}.example")
    body = {"ca_id": issuing["inter"]["id"], "csr": csr.read_text()}
    compromised = data(api.post(f"{API}/certificates", json=body), 201)
    same_key = data(api.post(f"{API}/certificates", json=body), 201)
    revoke = {"reason": "keyCompromise"}
    data(api.post(f"{API}/certificates/{compromised['id']}/revoke", json=revoke))
    held = issue(api, issuing["inter"]["id"], "bulk-held-key.example")
    data(api.post(f"{API}/certificates/{held['id']}/revoke", json=revoke))
    superseded = issue(api, issuing["inter"]["id"], "bulk-superseded.example")
    data(api.post(f"{API}/certificates/{superseded['id']}/revoke", json={"reason": "superseded"}))

    refusals = {}
    for cert in (compromised, same_key):
        refusals[cert["id"]] = error(api.post(f"{API}/certificates/{cert['id']}/renew"), 422)
    ids = [compromised["id"], same_key["id"], held["id"], superseded["id"]]
    result = data(api.post(f"{API}/certificates/bulk/renew", json={"ids": ids}))
    assert result["failed"] == [compromised["id"], same_key["id"]]
    assert {e["id"]: e["error"] for e in result["errors"]} == refusals
    assert "compromised" in refusals[compromised["id"]]
    assert result["success"] == [held["id"], superseded["id"]]
    for single in (held, superseded):
        data(api.post(f"{API}/certificates/{single['id']}/renew"), 201)


def test_renew_an_imported_certificate_under_a_named_ca(api: httpx.Client, workdir: Path) -> None:
    """An imported certificate has no issuing CA here: renewing it needs a ca_id, as bulk
    renew takes one, and the refusal without one says so."""
    root = foreign_root(workdir, f"/CN={unique('Single Renew Root')}")
    foreign = foreign_signed(workdir, root, "/CN=single-renew.example", "v3_leaf", "rsa:2048")
    imported = data(api.post(f"{API}/certificates/import", json={"certificate": foreign.pem}), 201)
    path = f"{API}/certificates/{imported['id']}/renew"
    assert "give a ca_id" in error(api.post(path, json={"validity_days": 30}), 409)
    target = create_root(api, unique("Single Renew Target"))
    renewed = data(api.post(path, json={"validity_days": 30, "ca_id": target["id"]}), 201)
    assert renewed["ca_id"] == target["id"] and renewed["issuer"] == target["subject"]
    assert renewed["common_name"] == "single-renew.example"
    error(api.post(path, json={"ca_id": UNKNOWN_ID}), 404)
    error(api.post(path, json={"ca_id": 0}), 422)


def test_bulk_delete_mixed_ids(api: httpx.Client, issuing: dict[str, Any]) -> None:
    doomed = [issue(api, issuing["inter"]["id"], f"bulk-delete-{i}.example") for i in range(2)]
    ids = [doomed[0]["id"], UNKNOWN_ID, doomed[1]["id"], doomed[0]["id"]]
    result = data(api.post(f"{API}/certificates/bulk/delete", json={"ids": ids}))
    assert result == {
        "success": [doomed[0]["id"], doomed[1]["id"]],
        "failed": [UNKNOWN_ID],
        "errors": [{"id": UNKNOWN_ID, "error": f"certificate {UNKNOWN_ID} not found"}],
    }
    for cert in doomed:
        error(api.get(f"{API}/certificates/{cert['id']}"), 404)


@pytest.mark.parametrize(
    ("fmt", "suffix", "marker"),
    [("pem", ".pem", b"BEGIN CERTIFICATE"), ("der", ".der", b"\x30"), ("pkcs7", ".p7b", b"PKCS7")],
)
def test_bulk_export_zip(
    api: httpx.Client, issuing: dict[str, Any], fmt: str, suffix: str, marker: bytes
) -> None:
    certs = [issue(api, issuing["inter"]["id"], f"zip-{i}.example") for i in range(2)]
    body = {"ids": [certs[0]["id"], UNKNOWN_ID, certs[1]["id"]], "format": fmt}
    response = api.post(f"{API}/certificates/bulk/export", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(f"{c['id']}-zip-{i}.example{suffix}" for i, c in enumerate(certs))
        for name in names:
            content = archive.read(name)
            assert content.startswith(marker) or marker in content[:40]
            if fmt == "pkcs7":
                printed = openssl("pkcs7", "-print_certs", input=content)
                assert printed.stdout.count(b"BEGIN CERTIFICATE") == 3
    error(api.post(f"{API}/certificates/bulk/export", json={"ids": [UNKNOWN_ID]}), 404)
    bad = {"ids": [certs[0]["id"]], "format": "pkcs12"}
    error(api.post(f"{API}/certificates/bulk/export", json=bad), 400)
