"""Smart import (/api/v2/import) and the certificate tools (/api/v2/tools) against objects
made by openssl (check-ssl is in test_check_ssl.py), and random or damaged content posted to
every parsing endpoint: never a 500, never a traceback."""

import base64
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.helpers import (
    API,
    ForeignCert,
    cert_of,
    data,
    error,
    foreign_root,
    foreign_signed,
    unique,
)
from tests.support import Server
from tests.tools import openssl, openssl_csr, pem_blocks
from tests.unit.test_formats_fuzz import SAMPLES, damaged


@pytest.fixture
def pki(workdir: Path) -> dict[str, Any]:
    """A foreign root, a leaf with its key, and a CSR with its key, all made by openssl."""
    root = foreign_root(workdir, f"/CN={unique('Smart Root')}")
    leaf = foreign_signed(
        workdir, root, f"/CN={unique('smart-leaf')}.example", "v3_leaf", "rsa:2048"
    )
    csr_key, csr = openssl_csr(
        workdir, f"/CN={unique('smart-csr')}.example", sans="DNS:smart-csr.example"
    )
    return {"root": root, "leaf": leaf, "csr": csr.read_text(), "csr_key": csr_key.read_text()}


def analyze(api: httpx.Client, content: str, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = data(
        api.post(f"{API}/import/analyze", json={"content": content, **extra})
    )
    return result


def execute(api: httpx.Client, content: str, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = data(
        api.post(f"{API}/import/execute", json={"content": content, **extra})
    )
    return result


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- smart import ------------------------------------------------------------------------------


def test_pem_bundle_with_ca_leaf_keys_and_csr(api: httpx.Client, pki: dict[str, Any]) -> None:
    root, leaf = pki["root"], pki["leaf"]
    bundle = (
        "exported from somewhere\n"
        + root.pem
        + "\n"
        + leaf.pem
        + leaf.key_pem
        + "between the objects\n"
        + pki["csr"]
        + pki["csr_key"]
        + "the end\n"
    )
    found = analyze(api, bundle)
    assert found["type"] == "bundle" and found["format"] == "pem"
    assert [o["type"] for o in found["objects"]] == [
        "ca_certificate",
        "certificate",
        "private_key",
        "csr",
        "private_key",
    ]
    assert found["summary"] == {
        "total": 5,
        "certificates": 1,
        "cas": 1,
        "csrs": 1,
        "private_keys": 2,
        "unreadable": 0,
    }
    ca_obj, leaf_obj, key_obj, csr_obj, csr_key_obj = found["objects"]
    assert ca_obj["details"]["self_signed"] is True and ca_obj["details"]["existing"] is None
    assert (
        leaf_obj["details"]["issuer_index"] == 0 and leaf_obj["details"]["private_key_index"] == 2
    )
    assert key_obj["details"] == {
        **key_obj["details"],
        "algorithm": "RSA",
        "size": 2048,
        "encrypted": False,
        "matches": [1],
    }
    assert (
        csr_obj["details"]["signature_valid"] is True
        and csr_obj["details"]["private_key_index"] == 4
    )
    assert csr_obj["details"]["san"] == ["dns:smart-csr.example"]
    assert csr_key_obj["details"]["matches"] == [3]
    fingerprint = cert_of(leaf.pem).fingerprint(hashes.SHA256()).hex(":").upper()
    assert leaf_obj["details"]["fingerprint_sha256"] == fingerprint

    done = execute(api, bundle)
    assert (done["cas_imported"], done["certificates_imported"], done["csrs_imported"]) == (1, 1, 1)
    assert done["keys_matched"] == 2 and done["errors"] == []
    by_index = {r["index"]: r for r in done["results"]}
    ca = data(api.get(f"{API}/cas/{by_index[0]['id']}"))
    assert ca["imported"] is True and ca["has_private_key"] is False
    cert = data(api.get(f"{API}/certificates/{by_index[1]['id']}"))
    assert cert["ca_id"] == ca["id"] and cert["private_key_available"] is True
    assert cert["fingerprint_sha256"] == fingerprint
    assert by_index[2] == {"index": 2, "type": "private_key", "status": "linked", "linked_to": 1}
    csr_row = data(api.get(f"{API}/csrs/{by_index[3]['id']}"))
    assert csr_row["has_private_key"] is True and csr_row["status"] == "pending"

    again = analyze(api, bundle)["objects"]
    assert again[0]["details"]["existing"] == {"type": "ca", "id": ca["id"]}
    assert again[1]["details"]["existing"] == {"type": "certificate", "id": cert["id"]}
    repeated = execute(api, bundle)
    assert repeated["cas_imported"] == repeated["certificates_imported"] == 0
    statuses = {r["index"]: r["status"] for r in repeated["results"]}
    assert statuses[0] == statuses[1] == statuses[2] == "skipped"
    assert "already present" in repeated["results"][1]["message"]


def test_binary_containers_and_encrypted_keys(
    api: httpx.Client, workdir: Path, pki: dict[str, Any]
) -> None:
    root, leaf = pki["root"], pki["leaf"]
    p12 = leaf.pkcs12("smart-pass", chain=[root])
    locked = analyze(api, b64(p12))
    assert locked["type"] == "pkcs12" and "password" in locked["objects"][0]["error"]
    opened = analyze(api, "BASE64:" + b64(p12), password="smart-pass")
    assert opened["format"] == "pkcs12"
    kinds = sorted(o["type"] for o in opened["objects"])
    assert kinds == ["ca_certificate", "certificate", "private_key"]
    key = next(o for o in opened["objects"] if o["type"] == "private_key")
    leaf_index = next(o["index"] for o in opened["objects"] if o["type"] == "certificate")
    assert key["details"]["matches"] == [leaf_index] and key["container"] == "pkcs12"

    chain = workdir / "chain.pem"
    chain.write_text(root.pem + leaf.pem)
    p7 = openssl("crl2pkcs7", "-nocrl", "-certfile", str(chain), "-outform", "DER").stdout
    as_p7 = data(
        api.post(
            f"{API}/import/analyze", files={"file": ("chain.p7b", p7, "application/octet-stream")}
        )
    )
    assert as_p7["type"] == "pkcs7" and as_p7["summary"]["certificates"] == 1
    assert as_p7["summary"]["cas"] == 1

    der = analyze(api, b64(leaf.der))
    assert der["type"] == "certificate" and der["format"] == "der"
    assert der["details"]["common_name"] == cert_of(leaf.pem).subject.rfc4514_string()[3:]

    encrypted = openssl("pkcs8", "-topk8", "-in", str(leaf.key_path), "-passout", "pass:kp").stdout
    content = leaf.pem + encrypted.decode()
    shut = analyze(api, content)["objects"][1]
    assert shut["type"] == "private_key" and "password is required" in shut["error"]
    assert shut["details"]["encrypted"] is True
    unlocked = analyze(api, content, password="kp")["objects"][1]
    assert unlocked["details"]["encrypted"] is True and unlocked["details"]["matches"] == [0]

    assert "neither" not in error(
        api.post(f"{API}/import/analyze", json={"content": "hello there"}), 400
    )
    error(api.post(f"{API}/import/analyze", json={"content": ""}), 422)
    error(api.post(f"{API}/import/analyze", json={"content": 5}), 422)
    error(
        api.post(
            f"{API}/import/analyze",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
    )


def test_execute_options_permissions_and_a_key_for_a_keyless_certificate(
    server: Server, api: httpx.Client, pki: dict[str, Any]
) -> None:
    root, leaf = pki["root"], pki["leaf"]
    narrow = data(
        api.post(
            f"{API}/account/apikeys",
            json={
                "name": unique("importer"),
                "permissions": ["read:certificates", "write:certificates"],
            },
        ),
        201,
    )["key"]
    with server.client(api_key=narrow) as limited:
        refused = limited.post(f"{API}/import/execute", json={"content": root.pem + leaf.pem})
        assert "write:cas" in error(refused, 403)
        only_leaf = data(
            limited.post(
                f"{API}/import/execute",
                json={"content": root.pem + leaf.pem, "options": {"import_cas": False}},
            )
        )
    assert only_leaf["certificates_imported"] == 1 and only_leaf["cas_imported"] == 0
    assert only_leaf["results"][0]["message"] == "not selected in options"
    cert_id = only_leaf["results"][1]["id"]
    assert data(api.get(f"{API}/certificates/{cert_id}"))["private_key_available"] is False

    keyed = execute(api, leaf.pem + leaf.key_pem)
    assert keyed["keys_matched"] == 1 and keyed["certificates_imported"] == 0
    assert keyed["results"][0]["status"] == "updated" and keyed["results"][0]["id"] == cert_id
    assert data(api.get(f"{API}/certificates/{cert_id}"))["private_key_available"] is True
    lonely = execute(api, pki["csr_key"], options={"import_keys": True})
    assert "matches this key" in lonely["skipped"][0]["message"]

    formats = data(api.get(f"{API}/import/formats"))
    assert {f["name"] for f in formats["formats"]} == {"PEM", "DER", "PKCS#12", "PKCS#7"}


def test_the_key_of_a_ca_imported_bare_is_added_when_it_comes(
    api: httpx.Client, pki: dict[str, Any]
) -> None:
    """As for certificates: a CA here without its key gets the key a later import brings
    (updated, audited), and can sign from then on; the key is not dropped as a duplicate."""
    root = pki["root"]
    ca_id = execute(api, root.pem)["results"][0]["id"]
    assert data(api.get(f"{API}/cas/{ca_id}"))["has_private_key"] is False
    keyed = execute(api, root.pem + root.key_pem)
    assert keyed["results"][0] == {**keyed["results"][0], "status": "updated", "id": ca_id}
    assert keyed["results"][1] == {
        "index": 1,
        "type": "private_key",
        "status": "linked",
        "linked_to": 0,
    }
    assert data(api.get(f"{API}/cas/{ca_id}"))["has_private_key"] is True
    host = f"{unique('keyed-ca')}.example.com"
    body = {"common_name": host, "ca_id": ca_id, "key_algorithm": "EC", "san": [f"dns:{host}"]}
    assert data(api.post(f"{API}/certificates", json=body), 201)["ca_id"] == ca_id
    logs = data(api.get(f"{API}/audit/logs", params={"action": "ca.import_key"}))
    assert any(log["resource_id"] == str(ca_id) for log in logs)
    assert execute(api, root.pem + root.key_pem)["results"][0]["status"] == "skipped"


def test_a_key_offered_to_a_certificate_given_twice_is_reported_with_the_one_kept(
    api: httpx.Client, pki: dict[str, Any]
) -> None:
    """The key goes in with the first copy; the second copy is a duplicate, and the key's
    line says where it went rather than "skipped" after the duplicate."""
    leaf = pki["leaf"]
    done = execute(api, leaf.pem + leaf.key_pem + leaf.pem)
    first, key, second = done["results"]
    assert first["status"] == "imported" and first["with_key"] is True
    assert key == {"index": 1, "type": "private_key", "status": "linked", "linked_to": 0}
    assert second["status"] == "skipped" and "already present" in second["message"]
    assert done["keys_matched"] == 1 and done["certificates_imported"] == 1
    assert data(api.get(f"{API}/certificates/{first['id']}"))["private_key_available"] is True


def test_a_csr_imported_again_is_a_duplicate(api: httpx.Client, pki: dict[str, Any]) -> None:
    """As for certificates: the same request again is skipped (not a second pending copy of
    it), and analyze says it is here; only a key it lacked is added."""
    csr, key = pki["csr"], pki["csr_key"]
    csr_id = execute(api, csr)["results"][0]["id"]
    assert analyze(api, csr)["details"]["existing"] == {"type": "csr", "id": csr_id}
    again = execute(api, "one\n" + csr + "and the same\n" + csr)
    assert again["csrs_imported"] == 0
    for result in again["results"]:
        assert result["status"] == "skipped"
        assert result["message"] == f"this CSR is already present (CSR {csr_id})"
    keyed = execute(api, csr + key)
    assert keyed["results"][0] == {**keyed["results"][0], "status": "updated", "id": csr_id}
    assert keyed["results"][1] == {
        "index": 1,
        "type": "private_key",
        "status": "linked",
        "linked_to": 0,
    }
    assert data(api.get(f"{API}/csrs/{csr_id}"))["has_private_key"] is True
    assert execute(api, csr + key)["results"][0]["status"] == "skipped"
    subject = x509.load_pem_x509_csr(csr.encode()).subject.rfc4514_string()
    rows = data(api.get(f"{API}/csrs", params={"per_page": 100}))
    assert [row["id"] for row in rows if row["subject"] == subject] == [csr_id]


def ca_chain(length: int, tag: str) -> list[x509.Certificate]:
    """CA certificates each issued (by name) by the one before; one key for speed."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names = [
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{tag} {i}")]) for i in range(length)
    ]
    return [
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(names[max(i - 1, 0)])
        .public_key(key.public_key())
        .serial_number(i + 1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        for i, name in enumerate(names)
    ]


def test_bundles_hold_at_most_500_objects_whatever_their_container(
    api: httpx.Client,
) -> None:
    """The 500-object limit counts what PKCS#7 holds too: smart import relates every object to
    every other, and a few megabytes of PKCS#7 hold thousands of certificates (3,000 took 40 s
    of a worker to analyze)."""
    certs = ca_chain(501, unique("many"))
    p7 = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
    for path in ("analyze", "execute"):
        upload = {"file": ("many.p7c", p7, "application/octet-stream")}
        assert "at most 500 objects" in error(api.post(f"{API}/import/{path}", files=upload), 400)
    pem = pkcs7.serialize_certificates(certs, serialization.Encoding.PEM).decode()
    assert "at most 500 objects" in error(
        api.post(f"{API}/import/execute", json={"content": pem}), 400
    )
    at_the_limit = pkcs7.serialize_certificates(certs[:500], serialization.Encoding.DER)
    assert analyze(api, b64(at_the_limit))["summary"]["cas"] == 500


# --- tools -------------------------------------------------------------------------------------


def openssl_field(cert: ForeignCert, *args: str) -> str:
    result = openssl("x509", "-in", str(cert.cert_path), "-noout", *args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip().split("=", 1)[1]


def test_decode_certificate_and_csr_match_openssl(
    api: httpx.Client, workdir: Path, pki: dict[str, Any]
) -> None:
    leaf = pki["leaf"]
    decoded = data(api.post(f"{API}/tools/decode-cert", json={"pem": leaf.pem}))
    assert int(decoded["serial_number"], 16) == int(openssl_field(leaf, "-serial"), 16)
    assert decoded["fingerprint_sha256"] == openssl_field(leaf, "-fingerprint", "-sha256")
    assert decoded["san"] == ["dns:leaf.foreign.test"] and decoded["is_ca"] is False
    assert decoded["key_usage"] == ["digitalSignature", "keyEncipherment"]
    assert decoded["public_key"]["algorithm"] == "RSA" and decoded["public_key"]["size"] == 2048
    assert decoded["chain_length"] == 1 and decoded["status"] == "valid"
    from_der = data(api.post(f"{API}/tools/decode-cert", json={"pem": "BASE64:" + b64(leaf.der)}))
    assert from_der["fingerprint_sha256"] == decoded["fingerprint_sha256"]
    chain = data(api.post(f"{API}/tools/decode-cert", json={"pem": leaf.pem + pki["root"].pem}))
    assert chain["chain_length"] == 2 and chain["chain"][1]["self_signed"] is True

    csr = data(api.post(f"{API}/tools/decode-csr", json={"pem": pki["csr"]}))
    assert csr["san"] == ["dns:smart-csr.example"] and csr["signature_valid"] is True
    assert csr["public_key"] == {"algorithm": "EC", "size": 256, "curve": "secp256r1"}
    text = openssl("req", "-in", "/dev/stdin", "-noout", "-subject", input=pki["csr"].encode())
    assert csr["common_name"] in text.stdout.decode()
    assert "certificate" in error(api.post(f"{API}/tools/decode-cert", json={"pem": "nope"}), 400)
    error(api.post(f"{API}/tools/decode-csr", json={"pem": leaf.pem}), 400)
    error(api.post(f"{API}/tools/decode-csr", json={}), 400)


def test_match_keys(api: httpx.Client, workdir: Path, pki: dict[str, Any]) -> None:
    leaf = pki["leaf"]
    same_key_csr = workdir / "same.csr"
    made = openssl(
        "req", "-new", "-key", str(leaf.key_path), "-subj", "/CN=same", "-out", str(same_key_csr)
    )
    assert made.returncode == 0, made.stderr.decode()
    body = {"certificate": leaf.pem, "private_key": leaf.key_pem, "csr": same_key_csr.read_text()}
    together = data(api.post(f"{API}/tools/match-keys", json=body))
    assert together["all_match"] is True and len(together["pairs"]) == 3
    assert all(i["valid"] for i in together["items"])

    mixed = data(api.post(f"{API}/tools/match-keys", json={**body, "csr": pki["csr"]}))
    assert mixed["all_match"] is False
    verdict = {(p["item1"], p["item2"]): p["match"] for p in mixed["pairs"]}
    assert verdict == {
        ("certificate", "private_key"): True,
        ("certificate", "csr"): False,
        ("private_key", "csr"): False,
    }
    unreadable = data(
        api.post(
            f"{API}/tools/match-keys", json={"certificate": leaf.pem, "private_key": "garbage"}
        )
    )
    assert unreadable["all_match"] is False and unreadable["items"][1]["valid"] is False
    error(api.post(f"{API}/tools/match-keys", json={"certificate": leaf.pem}), 400)


def convert(api: httpx.Client, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = data(api.post(f"{API}/tools/convert", json=body))
    return result


def test_convert_between_formats_read_by_openssl(
    api: httpx.Client, workdir: Path, pki: dict[str, Any]
) -> None:
    root, leaf = pki["root"], pki["leaf"]
    der = convert(api, pem=leaf.pem, output_format="der")
    assert der["encoding"] == "base64" and base64.b64decode(der["data"]) == leaf.der

    p12 = convert(
        api,
        pem=leaf.pem,
        private_key=leaf.key_pem,
        chain=root.pem,
        output_format="pkcs12",
        pkcs12_password="out-pass",
    )
    (workdir / "out.p12").write_bytes(base64.b64decode(p12["content_base64"]))
    opened = openssl(
        "pkcs12", "-in", str(workdir / "out.p12"), "-nodes", "-passin", "pass:out-pass"
    )
    assert opened.returncode == 0, opened.stderr.decode()
    assert opened.stdout.count(b"BEGIN CERTIFICATE") == 2 and b"PRIVATE KEY" in opened.stdout
    assert p12["contents"] == {"certificates": 2, "private_keys": 1, "csrs": 0}

    from_p12 = convert(
        api,
        pem=b64(leaf.pkcs12("in-pass", [root])),
        password="in-pass",
        output_format="pem",
        input_type="pkcs12",
    )
    assert from_p12["detected_format"] == "pkcs12" and from_p12["encoding"] == "text"
    (workdir / "back.pem").write_text(from_p12["data"])
    theirs = openssl("pkey", "-in", str(leaf.key_path), "-pubout").stdout
    assert openssl("pkey", "-in", str(workdir / "back.pem"), "-pubout").stdout == theirs
    assert pem_blocks(from_p12["data"])[0] == leaf.pem

    for fmt, inform in (("pkcs7", "PEM"), ("pkcs7-der", "DER")):
        p7 = convert(api, pem=leaf.pem + root.pem, output_format=fmt)
        raw = base64.b64decode(p7["content_base64"])
        printed = openssl("pkcs7", "-print_certs", "-inform", inform, input=raw)
        assert printed.returncode == 0 and printed.stdout.count(b"BEGIN CERTIFICATE") == 2

    back = convert(api, pem=b64(leaf.der), output_format="pem")
    assert back["data"] == leaf.pem and back["detected_format"] == "der"
    assert "output_format" in error(
        api.post(f"{API}/tools/convert", json={"pem": leaf.pem, "output_format": "jks"}), 400
    )
    assert "password" in error(
        api.post(f"{API}/tools/convert", json={"pem": leaf.pem, "output_format": "pkcs12"}), 400
    )
    error(api.post(f"{API}/tools/convert", json={"pem": leaf.pem, "input_type": "pkcs12"}), 400)


def p12_parts(workdir: Path, p12: dict[str, Any], password: str) -> tuple[str, str, bytes]:
    """The end-entity certificate, the CA certificates and the key of a PKCS#12, by openssl."""
    path = workdir / f"{unique('read')}.p12"
    path.write_bytes(base64.b64decode(p12["content_base64"]))
    common = ["pkcs12", "-in", str(path), "-passin", f"pass:{password}", "-nodes"]
    leaf, cas, key = (
        openssl(*common, *only)
        for only in (["-clcerts", "-nokeys"], ["-cacerts", "-nokeys"], ["-nocerts"])
    )
    assert leaf.returncode == cas.returncode == key.returncode == 0, key.stderr.decode()
    (workdir / "p12-key.pem").write_bytes(key.stdout)
    public = openssl("pkey", "-in", str(workdir / "p12-key.pem"), "-pubout").stdout
    return leaf.stdout.decode(), cas.stdout.decode(), public


def test_convert_pairs_the_key_with_its_certificate(
    api: httpx.Client, workdir: Path, pki: dict[str, Any]
) -> None:
    root, leaf = pki["root"], pki["leaf"]
    leaf_public = openssl("pkey", "-in", str(leaf.key_path), "-pubout").stdout
    # The CA certificate first, then the leaf, then the leaf's key: the key's certificate is
    # the bundle's own certificate, whatever its place; the others become its chain.
    for body in (
        {"pem": root.pem + leaf.pem + leaf.key_pem},
        {"pem": root.pem + leaf.pem, "private_key": leaf.key_pem},
        {"pem": leaf.pem, "chain": root.pem, "private_key": leaf.key_pem},
    ):
        p12 = convert(api, **body, output_format="pkcs12", password="pw")
        assert p12["contents"] == {"certificates": 2, "private_keys": 1, "csrs": 0}
        own, chain, public = p12_parts(workdir, p12, "pw")
        assert [cert_of(b) for b in pem_blocks(own)] == [cert_of(leaf.pem)]
        assert [cert_of(b) for b in pem_blocks(chain)] == [cert_of(root.pem)]
        assert public == leaf_public


def test_convert_refuses_a_key_of_no_given_certificate(
    api: httpx.Client, workdir: Path, pki: dict[str, Any]
) -> None:
    root, leaf = pki["root"], pki["leaf"]
    path = f"{API}/tools/convert"
    stranger = pki["csr_key"]
    for body in (
        {"pem": leaf.pem, "private_key": root.key_pem},
        {"pem": leaf.pem, "private_key": stranger},
        {"pem": root.pem + leaf.pem + stranger},
        {"pem": leaf.pem, "chain": root.pem, "private_key": stranger},
    ):
        refused = api.post(path, json={**body, "output_format": "pkcs12", "password": "x"})
        assert "does not belong" in error(refused, 400)


def test_a_traditional_pem_key_with_a_short_iv_is_refused_not_a_500(
    api: httpx.Client, pki: dict[str, Any]
) -> None:
    """An AES-encrypted traditional PEM key whose DEK-Info IV is 8 bytes instead of 16 made
    cryptography panic (a Rust assertion that escapes `except Exception`): a 500 from every
    endpoint that reads a key with its password."""
    leaf = pki["leaf"]
    traditional = openssl(
        "pkey", "-in", str(leaf.key_path), "-traditional", "-aes-256-cbc", "-passout", "pass:iv"
    ).stdout.decode()
    short_iv = re.sub(r"(DEK-Info: AES-256-CBC,)([0-9A-F]{16})[0-9A-F]{16}", r"\1\2", traditional)
    assert short_iv != traditional
    message = "DEK-Info IV is shorter than 16 bytes"
    matched = data(
        api.post(
            f"{API}/tools/match-keys",
            json={"certificate": leaf.pem, "private_key": short_iv, "password": "iv"},
        )
    )
    assert message in matched["items"][1]["error"] and matched["all_match"] is False
    found = analyze(api, leaf.pem + short_iv, password="iv")["objects"][1]
    assert message in found["error"]
    done = execute(api, leaf.pem + short_iv, password="iv")
    assert message in done["errors"][0]["message"]
    body = {"pem": short_iv, "password": "iv", "output_format": "der"}
    assert message in error(api.post(f"{API}/tools/convert", json=body), 400)
    body = {"certificate": leaf.pem, "private_key": short_iv, "password": "iv"}
    assert message in error(api.post(f"{API}/certificates/import", json=body), 400)
    whole = analyze(api, leaf.pem + traditional, password="iv")["objects"][1]
    assert whole["details"]["matches"] == [0]  # the intact key still opens


# --- nothing makes a 500 -----------------------------------------------------------------------


fuzz_content = st.one_of(
    damaged(),
    st.binary(max_size=600),
    st.sampled_from(sorted(SAMPLES.values())),
)


def as_text(raw: bytes, encode: bool) -> str:
    return b64(raw) if encode else raw.decode("latin-1")


@settings(
    max_examples=int(os.environ.get("TESSERA_E2E_FUZZ_EXAMPLES", "25")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=fuzz_content,
    encode=st.booleans(),
    password=st.sampled_from([None, "fuzz-password"]),
    output=st.sampled_from(["pem", "der", "pkcs12", "pkcs7", "pkcs7-der"]),
)
def test_random_and_damaged_content_never_makes_a_500(
    server: Server, raw: bytes, encode: bool, password: str | None, output: str
) -> None:
    text = as_text(raw, encode)
    upload = {"file": ("fuzz.bin", raw, "application/octet-stream")}
    fields = {"password": password} if password else {}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/certificates/import", {"files": upload, "data": fields}),
        ("/certificates/import", {"json": {"certificate": text, "password": password}}),
        ("/cas/import", {"files": upload, "data": fields}),
        ("/import/analyze", {"json": {"content": text, "password": password}}),
        ("/import/analyze", {"files": upload, "data": fields}),
        ("/import/execute", {"json": {"content": text, "password": password}}),
        ("/tools/decode-cert", {"json": {"pem": text}}),
        ("/tools/decode-csr", {"json": {"pem": text}}),
        (
            "/tools/convert",
            {
                "json": {
                    "pem": text,
                    "output_format": output,
                    "password": password,
                    "pkcs12_password": "out",
                }
            },
        ),
    ]
    with server.client() as client:
        for path, request in calls:
            response = client.post(f"{API}{path}", **request)
            shown = json.dumps(
                {"path": path, "status": response.status_code, "body": response.text[:300]}
            )
            assert response.status_code < 500, shown
            assert "Traceback" not in response.text and 'File "' not in response.text, shown
