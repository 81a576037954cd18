"""Certificate authorities through /api/v2/cas: browse, update, delete, export and import,
with foreign CAs made by openssl and every export read back by openssl."""

import io
import ipaddress
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

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
    import_ca_file,
    issue,
    self_signed_ca,
    unique,
)
from tests.support import Server
from tests.tools import openssl, openssl_verify, pem_blocks, pkilint_findings

UNKNOWN_ID = 987_654_321
OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


def all_cas(api: httpx.Client) -> list[dict]:
    rows: list[dict] = data(api.get(f"{API}/cas", params={"per_page": 100}))
    return rows


def ca_total(api: httpx.Client) -> int:
    """How many CAs there are (the listing's total, not one page of it)."""
    return int(api.get(f"{API}/cas").json()["meta"]["total"])


def ca_ids(api: httpx.Client) -> set[int]:
    return {ca["id"] for ca in all_cas(api)}


# Browsing


def test_list_pagination_and_meta(api: httpx.Client) -> None:
    created = [create_root(api, unique("Paged Root"))["id"] for _ in range(3)]
    first = api.get(f"{API}/cas", params={"page": 1, "per_page": 2}).json()
    total = first["meta"]["total"]
    assert first["meta"] == {"page": 1, "per_page": 2, "total": total}
    assert total >= 4  # the three above and the internal CA
    assert len(first["data"]) == 2
    seen: list[int] = []
    pages = (total + 1) // 2
    for page in range(1, pages + 1):
        body = api.get(f"{API}/cas", params={"page": page, "per_page": 2}).json()
        assert body["meta"] == {"page": page, "per_page": 2, "total": total}
        assert 1 <= len(body["data"]) <= 2
        seen += [ca["id"] for ca in body["data"]]
    assert len(seen) == len(set(seen)) == total
    assert set(created) <= set(seen)
    beyond = api.get(f"{API}/cas", params={"page": pages + 1, "per_page": 2}).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == total
    default = api.get(f"{API}/cas").json()
    assert default["meta"]["page"] == 1 and default["meta"]["per_page"] == 20
    for bad in ({"per_page": 101}, {"per_page": 0}, {"page": 0}):
        error(api.get(f"{API}/cas", params=bad), 422)


def test_list_entries_carry_the_seed_fields(api: httpx.Client) -> None:
    root = create_root(api, unique("Fields Root"), "RSA", 2048)
    issue(api, root["id"], "counted.example.com")
    issue(api, root["id"], "counted2.example.com")
    listed = next(ca for ca in all_cas(api) if ca["id"] == root["id"])
    for field in (
        "id",
        "name",
        "common_name",
        "ca_type",
        "serial_number",
        "valid_from",
        "valid_until",
        "key_size",
        "signature_algorithm",
        "is_active",
        "certificates_count",
    ):
        assert field in listed, field
    assert listed["certificates_count"] == 2
    assert listed["key_size"] == 2048 and listed["ca_type"] == "root"
    assert listed["signature_algorithm"] == "sha256WithRSAEncryption"
    assert listed["serial_number"].startswith("0x")


def flatten(nodes: list[dict]) -> list[dict]:
    return [n for node in nodes for n in [node, *flatten(node["children"])]]


def test_tree_nodes_carry_the_list_counts(api: httpx.Client) -> None:
    root = create_root(api, unique("Tree Root"))
    inter = create_intermediate(api, root["id"], unique("Tree Issuing"))
    issue(api, root["id"], "tree-root.example.com")
    for index in range(2):
        issue(api, inter["id"], f"tree-{index}.example.com")
    nodes = {n["id"]: n for n in flatten(data(api.get(f"{API}/cas/tree")))}
    assert nodes[root["id"]]["certificates_count"] == 1
    assert nodes[inter["id"]]["certificates_count"] == 2
    assert [c["id"] for c in nodes[root["id"]]["children"]] == [inter["id"]]
    listed = {ca["id"]: ca["certificates_count"] for ca in all_cas(api)}
    assert {i: n["certificates_count"] for i, n in nodes.items()} == listed


def test_get_details(api: httpx.Client, workdir: Path) -> None:
    root = create_root(api, unique("Details Root"), "EC", 384)
    inter = create_intermediate(api, root["id"], unique("Details Issuing"), path_length=0)
    issue(api, inter["id"], "detail.example.com")
    details = data(api.get(f"{API}/cas/{inter['id']}"))
    assert details["id"] == inter["id"] and details["parent_id"] == root["id"]
    assert details["ca_type"] == "intermediate" and details["is_root"] is False
    assert details["certificates_count"] == 1
    assert details["is_ca"] is True and details["path_length"] == 0
    assert details["has_private_key"] is True and details["is_active"] is True
    assert details["key_algorithm"] == "EC" and details["key_size"] == 256
    assert details["signature_algorithm"] == "ecdsa-with-SHA384"  # signed by the P-384 root
    parsed = cert_of(details["pem"])
    assert details["serial_number"] == f"0x{parsed.serial_number:X}"
    (workdir / "ca.pem").write_text(details["pem"])
    shown = openssl("x509", "-in", str(workdir / "ca.pem"), "-noout", "-fingerprint", "-sha256")
    assert shown.stdout.decode().strip().split("=", 1)[1] == details["fingerprint_sha256"]
    assert details["subject"] == parsed.subject.rfc4514_string()
    assert details["issuer"] == root["subject"]
    error(api.get(f"{API}/cas/{UNKNOWN_ID}"), 404)


# Updating and deleting


def test_key_type_is_an_alias_of_key_algorithm(api: httpx.Client) -> None:
    """Templates take `key_type`; a CA or certificate asked for with it got an RSA key."""
    body = {"common_name": unique("Key Type Root"), "key_type": "EC", "key_size": 384}
    root = data(api.post(f"{API}/cas", json=body), 201)
    assert (root["key_algorithm"], root["key_size"]) == ("EC", 384)
    pem = data(api.get(f"{API}/cas/{root['id']}"))["pem"]
    assert isinstance(cert_of(pem).public_key(), ec.EllipticCurvePublicKey)
    leaf = {"common_name": "key-type.example.com", "ca_id": root["id"], "key_type": "Ed25519"}
    issued = data(api.post(f"{API}/certificates", json=leaf), 201)
    assert issued["key_algorithm"] == "Ed25519"
    same = {**leaf, "key_type": "ecdsa", "key_algorithm": "EC", "key_size": 256}
    assert data(api.post(f"{API}/certificates", json=same), 201)["key_algorithm"] == "EC"
    # Both, naming different types, is refused, whichever is meant; nothing is made.
    before = ca_total(api)
    message = "key_type and key_algorithm name different key types"
    clash = {**body, "key_algorithm": "RSA"}
    assert message in error(api.post(f"{API}/cas", json=clash), 422)
    assert message in error(
        api.post(f"{API}/certificates", json={**leaf, "key_algorithm": "RSA"}), 422
    )
    assert ca_total(api) == before


def test_patch_name_and_disable(api: httpx.Client) -> None:
    root = create_root(api, unique("Patch Root"))
    renamed = data(api.patch(f"{API}/cas/{root['id']}", json={"name": "Renamed CA"}))
    assert renamed["name"] == "Renamed CA" and renamed["is_active"] is True
    assert data(api.get(f"{API}/cas/{root['id']}"))["name"] == "Renamed CA"
    assert renamed["common_name"] == root["common_name"]  # the certificate is unchanged
    error(api.patch(f"{API}/cas/{root['id']}", json={"name": "   "}), 400)

    disabled = data(api.patch(f"{API}/cas/{root['id']}", json={"is_active": False}))
    assert disabled["is_active"] is False and disabled["name"] == "Renamed CA"
    refused = api.post(
        f"{API}/certificates",
        json={"common_name": "nope.example.com", "ca_id": root["id"], "key_algorithm": "EC"},
    )
    assert "disabled" in error(refused, 422)
    sub = api.post(
        f"{API}/cas",
        json={"common_name": "Sub of disabled", "ca_type": "intermediate", "parent_id": root["id"]},
    )
    error(sub, 422)
    listing = api.get(f"{API}/cas/{root['id']}/certificates").json()
    assert listing["meta"]["total"] == 0  # nothing was half-written

    enabled = data(api.patch(f"{API}/cas/{root['id']}", json={"is_active": True}))
    assert enabled["is_active"] is True
    issue(api, root["id"], "again.example.com")
    error(api.patch(f"{API}/cas/{UNKNOWN_ID}", json={"name": "x"}), 404)


def test_delete_empty_ca(api: httpx.Client) -> None:
    root = create_root(api, unique("Delete Me"))
    response = api.delete(f"{API}/cas/{root['id']}")
    assert response.status_code == 204 and response.content == b""
    error(api.get(f"{API}/cas/{root['id']}"), 404)
    assert root["id"] not in ca_ids(api)
    error(api.delete(f"{API}/cas/{root['id']}"), 404)


def test_delete_refused_with_subordinates_or_certificates(api: httpx.Client) -> None:
    root = create_root(api, unique("Parent Root"))
    inter = create_intermediate(api, root["id"], unique("Child CA"))
    assert "subordinate" in error(api.delete(f"{API}/cas/{root['id']}"), 409)
    cert = issue(api, inter["id"], "held.example.com")
    assert "certificates" in error(api.delete(f"{API}/cas/{inter['id']}"), 409)
    assert {root["id"], inter["id"]} <= ca_ids(api)
    # A revoked certificate still belongs to its CA.
    data(api.post(f"{API}/certificates/{cert['id']}/revoke", json={"reason": "superseded"}))
    error(api.delete(f"{API}/cas/{inter['id']}"), 409)
    assert api.delete(f"{API}/certificates/{cert['id']}").status_code == 204
    assert api.delete(f"{API}/cas/{inter['id']}").status_code == 204
    assert api.delete(f"{API}/cas/{root['id']}").status_code == 204


def test_its_ocsp_responder_does_not_keep_a_ca_from_deletion(
    server: Server, api: httpx.Client
) -> None:
    """Anyone asking about a CA's certificates over OCSP makes the server issue that CA's
    responder certificate: the server's own, it goes with the CA instead of counting as a
    certificate the CA issued (which would keep it until someone found and deleted it)."""
    root = data(api.get(f"{API}/cas/{create_root(api, unique('Asked About Root'))['id']}"))
    cert = issue(api, root["id"], "asked-about.example.com")
    issued = cert_of(data(api.get(f"{API}/certificates/{cert['id']}"))["pem"])
    asked = ocsp.OCSPRequestBuilder().add_certificate(issued, cert_of(root["pem"]), hashes.SHA1())
    der = asked.build().public_bytes(serialization.Encoding.DER)
    answer = httpx.post(f"{server.http_url}/ocsp", content=der, headers=OCSP_REQUEST, timeout=30)
    responder = ocsp.load_der_ocsp_response(answer.content).certificates
    assert len(responder) == 1  # a delegated responder, issued by the CA
    assert error(api.delete(f"{API}/cas/{root['id']}"), 409) == (
        f"CA {root['id']} has issued 1 certificates; delete them first"
    )
    assert api.delete(f"{API}/certificates/{cert['id']}").status_code == 204
    assert api.delete(f"{API}/cas/{root['id']}").status_code == 204
    serial = format(responder[0].serial_number, "X")
    assert db_rows(server, "SELECT id FROM certificates WHERE serial_number = ?", serial) == []


def test_internal_ca_is_not_deletable(api: httpx.Client) -> None:
    internal = [ca for ca in all_cas(api) if ca["internal"]]
    assert len(internal) == 1
    error(api.delete(f"{API}/cas/{internal[0]['id']}"), 409)


def test_bulk_delete_reports_each_id(api: httpx.Client) -> None:
    free_one = create_root(api, unique("Bulk Free"))
    free_two = create_root(api, unique("Bulk Free"))
    parent = create_root(api, unique("Bulk Parent"))
    create_intermediate(api, parent["id"], unique("Bulk Child"))
    with_cert = create_root(api, unique("Bulk Busy"))
    issue(api, with_cert["id"], "busy.example.com")
    internal = next(ca["id"] for ca in all_cas(api) if ca["internal"])
    ids = [free_one["id"], parent["id"], UNKNOWN_ID, with_cert["id"], free_two["id"], internal]
    result = data(api.post(f"{API}/cas/bulk/delete", json={"ids": ids}))
    assert sorted(result["success"]) == sorted([free_one["id"], free_two["id"]])
    failed = [parent["id"], UNKNOWN_ID, with_cert["id"], internal]
    assert sorted(result["failed"]) == sorted(failed)
    remaining = ca_ids(api)
    assert free_one["id"] not in remaining and free_two["id"] not in remaining
    assert parent["id"] in remaining and with_cert["id"] in remaining
    error(api.post(f"{API}/cas/bulk/delete", json={"ids": []}), 422)


# Exports


def test_export_formats(api: httpx.Client, workdir: Path) -> None:
    root = create_root(api, unique("Export Root"), "RSA", 2048)
    inter = create_intermediate(api, root["id"], unique("Export Issuing"))
    path = f"{API}/cas/{inter['id']}/export"
    pem = download(api, path, format="pem")
    assert pem.text.count("BEGIN CERTIFICATE") == 1 and "PRIVATE KEY" not in pem.text
    assert "attachment" in pem.headers["content-disposition"]
    der = download(api, path, format="der")
    assert der.headers["content-type"].startswith("application/pkix-cert")
    from_der = openssl("x509", "-inform", "DER", "-outform", "PEM", input=der.content)
    assert from_der.returncode == 0, from_der.stderr
    assert cert_of(from_der.stdout) == cert_of(pem.text)
    chain = pem_blocks(download(api, path, format="chain").text)
    assert len(chain) == 2
    assert cert_of(chain[0]) == cert_of(pem.text)
    assert cert_of(chain[1]) == cert_of(download(api, f"{API}/cas/{root['id']}/export").text)
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    default = download(api, path)
    assert default.text == pem.text
    for bad in ("pkcs12", "txt", ""):
        error(api.get(path, params={"format": bad}), 400)
    error(api.get(f"{API}/cas/{UNKNOWN_ID}/export"), 404)


def test_export_all_is_a_pem_bundle(api: httpx.Client) -> None:
    create_root(api, unique("Bundle Root"))
    listed = all_cas(api)
    bundle = download(api, f"{API}/cas/export").text
    blocks = pem_blocks(bundle)
    assert len(blocks) == len(listed)
    serials = {f"0x{cert_of(b).serial_number:X}" for b in blocks}
    assert serials == {ca["serial_number"] for ca in listed}
    for block in blocks:
        assert openssl("x509", "-noout", "-subject", input=block.encode()).returncode == 0


def test_export_all_formats(api: httpx.Client) -> None:
    """As /certificates/export: a PEM bundle by default, PKCS#7 on request; DER (one
    certificate) and unknown formats are a 400, never a PEM bundle in their place."""
    create_root(api, unique("Format Root"))
    path = f"{API}/cas/export"
    pem = download(api, path, format="pem")
    assert 'filename="cas.pem"' in pem.headers["content-disposition"]
    serials = {cert_of(b).serial_number for b in pem_blocks(pem.text)}
    assert download(api, path).text == pem.text
    for fmt, inform in (("pkcs7", "PEM"), ("p7b", "PEM"), ("pkcs7-der", "DER"), ("p7c", "DER")):
        p7 = download(api, path, format=fmt)
        assert p7.headers["content-type"].startswith("application/x-pkcs7-certificates")
        printed = openssl("pkcs7", "-inform", inform, "-print_certs", input=p7.content)
        assert printed.returncode == 0, (fmt, printed.stderr)
        assert {cert_of(b).serial_number for b in pem_blocks(printed.stdout.decode())} == serials
    assert "DER holds a single certificate" in error(api.get(path, params={"format": "der"}), 400)
    for bad in ("chain", "pkcs12", "txt", ""):
        assert "format must be one of" in error(api.get(path, params={"format": bad}), 400), bad
    assert "DER" in error(api.get(f"{API}/certificates/export", params={"format": "der"}), 400)


def test_a_ca_that_cannot_sign_is_refused_for_one_reason_everywhere(
    api: httpx.Client, workdir: Path
) -> None:
    """One rule (domains/issuance.signing_refusal) for issuing and for choosing the ACME or
    SCEP CA: each refusal names the same reason, with each place's own status."""
    internal = next(ca["id"] for ca in all_cas(api) if ca["internal"])
    disabled = create_root(api, unique("Disabled Root"))["id"]
    data(api.patch(f"{API}/cas/{disabled}", json={"is_active": False}))
    keyless_root = foreign_root(workdir, f"/CN={unique('Keyless Root')}")
    keyless = data(import_ca_file(api, keyless_root.pem.encode(), "root.pem"), 201)["id"]
    for ca_id, reason in [
        (internal, "it is the internal CA, which signs only the server's own TLS certificate"),
        (disabled, "it is disabled"),
        (keyless, "it has no private key here"),
    ]:
        expected = f"CA {ca_id} cannot sign: {reason}"
        leaf = {"common_name": "refused.example.com", "ca_id": ca_id, "key_algorithm": "EC"}
        assert error(api.post(f"{API}/certificates", json=leaf), 422) == expected
        acme = {"issuing_ca_id": ca_id}
        assert error(api.patch(f"{API}/acme/settings", json=acme), 400) == expected
        scep = {"enabled": True, "ca_id": ca_id}
        assert error(api.patch(f"{API}/scep/config", json=scep), 422) == expected


def test_an_imported_ca_with_a_key_under_the_floor_signs_nothing(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    """The key floor (no RSA under 2048) holds for the key that signs too: an imported
    RSA-1024 CA is kept (its certificates may be here), but issues no certificate and no
    sub-CA, and cannot be chosen for ACME or SCEP. It still vouches for what it issued: its
    OCSP answers are signed by its own key (as its CRLs are), not `unauthorized`."""
    weak = foreign_root(workdir, f"/CN={unique('Weak Imported Root')}", key="rsa:1024")
    content = (weak.pem + weak.key_pem).encode()
    ca = data(import_ca_file(api, content, "weak.pem"), 201)
    assert ca["has_private_key"] is True and ca["key_size"] == 1024
    before = data(api.get(f"{API}/certificates/stats"))["total"], ca_total(api)
    expected = f"CA {ca['id']} cannot sign: its key is RSA-1024, under the 2048-bit floor"
    leaf = {"common_name": "weak-issuer.example.com", "ca_id": ca["id"], "key_algorithm": "EC"}
    assert error(api.post(f"{API}/certificates", json=leaf), 422) == expected
    sub = {"common_name": unique("Under Weak"), "ca_type": "intermediate", "parent_id": ca["id"]}
    assert error(api.post(f"{API}/cas", json={**sub, "key_algorithm": "EC"}), 422) == expected
    assert error(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": ca["id"]}), 400) == (
        expected
    )
    assert error(
        api.patch(f"{API}/scep/config", json={"enabled": True, "ca_id": ca["id"]}), 422
    ) == (expected)
    assert (data(api.get(f"{API}/certificates/stats"))["total"], ca_total(api)) == before
    issued = cert_of(foreign_signed(workdir, weak, "/CN=issued-elsewhere.example", "v3_leaf").pem)
    asked = ocsp.OCSPRequestBuilder().add_certificate(issued, cert_of(weak.pem), hashes.SHA1())
    der = asked.build().public_bytes(serialization.Encoding.DER)
    answer = httpx.post(f"{server.http_url}/ocsp", content=der, headers=OCSP_REQUEST, timeout=30)
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN  # not filed here
    assert response.certificates == []  # signed by the CA itself
    weak_key = cert_of(weak.pem).public_key()
    assert isinstance(weak_key, rsa.RSAPublicKey) and response.signature_hash_algorithm
    weak_key.verify(
        response.signature,
        response.tbs_response_bytes,
        padding.PKCS1v15(),
        response.signature_hash_algorithm,
    )


def test_an_expired_ca_is_refused_as_the_acme_or_scep_ca(api: httpx.Client) -> None:
    """Chosen for ACME or SCEP, an expired CA (with its key here) would fail every order and
    enrollment: the settings refuse it when it is chosen, naming the day it expired."""
    cert, key = self_signed_ca(unique("Expired Root"), -timedelta(days=1), timedelta(days=30))
    bundle = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_id = data(import_ca_file(api, bundle, "expired.pem"), 201)["id"]
    day = cert.not_valid_after_utc.date().isoformat()
    expected = f"CA {ca_id} cannot sign: it expired on {day}"
    assert error(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": ca_id}), 400) == expected
    scep = {"enabled": True, "ca_id": ca_id}
    assert error(api.patch(f"{API}/scep/config", json=scep), 422) == expected
    leaf = {"common_name": "late.example.com", "ca_id": ca_id, "key_algorithm": "EC"}
    assert "expired" in error(api.post(f"{API}/certificates", json=leaf), 409)


def test_bulk_export_is_a_zip(api: httpx.Client) -> None:
    chosen = [create_root(api, unique("Zip Root")) for _ in range(3)]
    ids = [ca["id"] for ca in chosen]
    response = api.post(f"{API}/cas/bulk/export", json={"ids": ids})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert len(names) == 3
        serials = set()
        for name in names:
            content = archive.read(name)
            shown = openssl("x509", "-noout", "-serial", input=content)
            assert shown.returncode == 0, (name, shown.stderr)
            serials.add("0x" + shown.stdout.decode().strip().split("=", 1)[1].lstrip("0"))
    assert serials == {ca["serial_number"] for ca in chosen}
    error(api.post(f"{API}/cas/bulk/export", json={"ids": []}), 422)


def test_bulk_export_of_unknown_ids_is_404(api: httpx.Client) -> None:
    """As the certificates' bulk export: 404 when none is found, the found ones otherwise."""
    error(api.post(f"{API}/cas/bulk/export", json={"ids": [UNKNOWN_ID]}), 404)
    error(api.post(f"{API}/cas/bulk/export", json={"ids": [UNKNOWN_ID, UNKNOWN_ID + 1]}), 404)
    known = create_root(api, unique("Known Zip Root"))
    response = api.post(f"{API}/cas/bulk/export", json={"ids": [UNKNOWN_ID, known["id"]]})
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert [cert_of(archive.read(n)) for n in archive.namelist()] == [
            cert_of(data(api.get(f"{API}/cas/{known['id']}"))["pem"])
        ]


def test_ca_certificates_with_status_filter(api: httpx.Client) -> None:
    root = create_root(api, unique("Filter Root"))
    other = create_root(api, unique("Other Root"))
    kept = issue(api, root["id"], "kept.example.com")
    gone = issue(api, root["id"], "gone.example.com")
    issue(api, other["id"], "elsewhere.example.com")
    data(api.post(f"{API}/certificates/{gone['id']}/revoke", json={"reason": "keyCompromise"}))
    path = f"{API}/cas/{root['id']}/certificates"
    everything = api.get(path).json()
    assert everything["meta"] == {"page": 1, "per_page": 50, "total": 2}
    assert {c["id"] for c in everything["data"]} == {kept["id"], gone["id"]}
    active = data(api.get(path, params={"status": "active"}))
    assert [c["id"] for c in active] == [kept["id"]]
    revoked = data(api.get(path, params={"status": "revoked"}))
    assert [c["id"] for c in revoked] == [gone["id"]]
    assert revoked[0]["status"] == "revoked"
    assert data(api.get(path, params={"status": "expired"})) == []
    assert data(api.get(path, params={"status": "expiring"})) == []
    paged = api.get(path, params={"page": 2, "per_page": 1}).json()
    assert paged["meta"] == {"page": 2, "per_page": 1, "total": 2} and len(paged["data"]) == 1
    error(api.get(path, params={"status": "sleeping"}), 400)
    error(api.get(f"{API}/cas/{UNKNOWN_ID}/certificates"), 404)


# Import


def test_import_pem_certificate_only(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign PEM Root/O=Elsewhere")
    response = import_ca_file(api, ext.pem.encode(), "root.pem", name="Foreign PEM")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["message"] == 'CA "Foreign PEM" imported successfully'
    ca = body["data"]
    assert ca["name"] == ca["descr"] == "Foreign PEM"
    assert ca["refid"] and ca["subject"] == "O=Elsewhere,CN=Foreign PEM Root"
    assert ca["is_root"] is True and ca["ca_type"] == "root" and ca["parent_id"] is None
    assert ca["imported"] is True and ca["has_private_key"] is False
    assert ca["serial_number"] == f"0x{cert_of(ext.pem).serial_number:X}"
    exported = download(api, f"{API}/cas/{ca['id']}/export", format="der").content
    assert exported == ext.der
    refused = api.post(
        f"{API}/certificates",
        json={"common_name": "x.example.com", "ca_id": ca["id"], "key_algorithm": "EC"},
    )
    error(refused, 422)


def test_ca_answers_carry_their_certificates_count(api: httpx.Client, workdir: Path) -> None:
    """Every CA a write answers with counts its certificates (the seed's certificates_count),
    as the list does: an update of a CA that has some, an import that adopts some."""
    root = create_root(api, unique("Counted Root"))
    issue(api, root["id"], "counted.example.com")
    renamed = data(api.patch(f"{API}/cas/{root['id']}", json={"name": unique("Counted")}))
    assert renamed["certificates_count"] == 1

    ext = foreign_root(workdir, f"/CN={unique('Adopting CA Root')}")
    leaf = foreign_signed(workdir, ext, "/CN=adopted.example", "v3_leaf")
    orphan = api.post(f"{API}/certificates/import", json={"certificate": leaf.pem})
    assert data(orphan, 201)["ca_id"] is None
    imported = data(import_ca_file(api, ext.pem.encode(), "root.pem"), 201)
    listed = data(api.get(f"{API}/cas", params={"per_page": 100}))
    assert [c["certificates_count"] for c in listed if c["id"] == imported["id"]] == [1]
    assert imported["certificates_count"] == 1


def test_import_der_certificate(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign DER Root", key="rsa:2048")
    response = import_ca_file(api, ext.der, "root.der")
    ca = data(response, 201)
    assert ca["name"] == "Foreign DER Root"  # the CN when no name is given
    assert ca["key_algorithm"] == "RSA" and ca["key_size"] == 2048
    assert ca["has_private_key"] is False
    assert data(api.get(f"{API}/cas/{ca['id']}"))["pem"] == ext.pem


def test_import_pkcs12_with_key_then_issue(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign P12 Root/O=Elsewhere", key="rsa:2048")
    p12 = ext.pkcs12("p12-pass")
    wrong = import_ca_file(api, p12, "root.p12", password="wrong-pass")
    error(wrong, 400)
    ca = data(import_ca_file(api, p12, "root.p12", password="p12-pass", name="P12 Root"), 201)
    assert ca["has_private_key"] is True and ca["imported"] is True
    leaf = issue(
        api,
        ca["id"],
        "issued-by-imported.example.com",
        san=["dns:issued-by-imported.example.com"],
    )
    chain = pem_blocks(
        download(api, f"{API}/certificates/{leaf['id']}/export", format="chain").text
    )
    assert len(chain) == 2
    (workdir / "foreign-anchor.pem").write_text(ext.pem)
    leaf_path = workdir / "issued.pem"
    leaf_path.write_text(chain[0])
    verified = openssl(
        "verify", "-x509_strict", "-CAfile", str(workdir / "foreign-anchor.pem"), str(leaf_path)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert b"OK" in verified.stdout
    assert cert_of(chain[1]) == cert_of(ext.pem)


def test_import_pkcs12_without_key(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign Keyless P12")
    p12 = ext.pkcs12("p12-pass")
    ca = data(import_ca_file(api, p12, "root.pfx", password="p12-pass", import_key="false"), 201)
    assert ca["has_private_key"] is False
    refused = api.post(
        f"{API}/certificates",
        json={"common_name": "x.example.com", "ca_id": ca["id"], "key_algorithm": "EC"},
    )
    assert "private key" in error(refused, 422)


def test_import_pem_with_surrounding_text(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign Text Root")
    text = openssl("x509", "-in", str(ext.cert_path), "-text").stdout.decode()
    assert not text.startswith("-----BEGIN")
    content = f"Bag Attributes\n    friendlyName: root\n{text}\ntrailing notes here\n"
    ca = data(import_ca_file(api, content.encode(), "root.crt"), 201)
    assert cert_of(data(api.get(f"{API}/cas/{ca['id']}"))["pem"]) == cert_of(ext.pem)
    # The same with Windows line endings, from a different CA.
    other = foreign_root(workdir, "/CN=Foreign CRLF Root")
    text = openssl("x509", "-in", str(other.cert_path), "-text").stdout.decode()
    crlf = f"Subject: whatever\n{text}\n-- end of mail --\n".replace("\n", "\r\n")
    ca = data(import_ca_file(api, crlf.encode(), "root.cer"), 201)
    assert cert_of(data(api.get(f"{API}/cas/{ca['id']}"))["pem"]) == cert_of(other.pem)


def test_import_intermediate_links_to_imported_parent(api: httpx.Client, workdir: Path) -> None:
    # Two roots with the same name: only the key identifiers tell them apart.
    first = foreign_root(workdir, "/CN=Foreign Twin Root/O=Elsewhere")
    second = foreign_root(workdir, "/CN=Foreign Twin Root/O=Elsewhere")
    first_ca = data(import_ca_file(api, first.pem.encode(), "a.pem"), 201)
    second_ca = data(import_ca_file(api, second.pem.encode(), "b.pem"), 201)
    inter = foreign_signed(workdir, second, "/CN=Foreign Issuing CA/O=Elsewhere")
    imported = data(
        import_ca_file(api, inter.pem.encode(), "inter.pem", name="Foreign Issuing"), 201
    )
    assert imported["parent_id"] == second_ca["id"] != first_ca["id"]
    assert imported["ca_type"] == "intermediate" and imported["is_root"] is False
    tree = data(api.get(f"{API}/cas/tree"))
    node = next(n for n in tree if n["id"] == second_ca["id"])
    assert [c["id"] for c in node["children"]] == [imported["id"]]
    chain = pem_blocks(download(api, f"{API}/cas/{imported['id']}/export", format="chain").text)
    assert [cert_of(c) for c in chain] == [cert_of(inter.pem), cert_of(second.pem)]
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    # An orphan intermediate is kept as an intermediate without a parent.
    orphan_root = foreign_root(workdir, "/CN=Foreign Unimported Root")
    orphan = foreign_signed(workdir, orphan_root, "/CN=Foreign Orphan CA")
    lone = data(import_ca_file(api, orphan.pem.encode(), "orphan.pem"), 201)
    assert lone["ca_type"] == "intermediate" and lone["parent_id"] is None
    assert "subordinate" in error(api.delete(f"{API}/cas/{second_ca['id']}"), 409)


def constrained_root(common_name: str) -> str:
    """A foreign root (PEM, with its key) whose name constraints permit example.com and
    192.0.2.0/24 and exclude bad.example.com (RFC 5280 4.2.1.10)."""
    cert, key = self_signed_ca(common_name, lifetime=timedelta(days=3650))
    constraints = x509.NameConstraints(
        permitted_subtrees=[
            x509.DNSName("example.com"),
            x509.IPAddress(ipaddress.ip_network("192.0.2.0/24")),
        ],
        excluded_subtrees=[x509.DNSName("bad.example.com")],
    )
    builder = x509.CertificateBuilder(
        cert.issuer,
        cert.subject,
        cert.public_key(),
        cert.serial_number,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        [*cert.extensions],
    ).add_extension(constraints, critical=True)
    signed = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return signed.public_bytes(serialization.Encoding.PEM).decode() + key_pem.decode()


def test_an_imported_cas_name_constraints_hold_for_what_it_signs(
    api: httpx.Client, workdir: Path
) -> None:
    """A certificate outside the issuer's name constraints is one every relying party refuses
    ("permitted subtree violation"): it is refused (422) and nothing is written. A sub-CA
    made under the constrained CA carries the constraints on, so its leaves stay inside."""
    pem = constrained_root(unique("Constrained Root"))
    anchor = pem_blocks(pem)[0]
    root = data(import_ca_file(api, pem.encode(), "constrained.pem"), 201)
    inside = issue(api, root["id"], "www.example.com", san=["dns:www.example.com", "ip:192.0.2.5"])
    leaf = download(api, f"{API}/certificates/{inside['id']}/export", format="pem").text
    assert "OK" in openssl_verify(workdir, leaf, [anchor])
    before = data(api.get(f"{API}/certificates/stats"))["total"]
    for common_name, san in [
        ("www.other.org", ["dns:www.other.org"]),
        ("host.bad.example.com", ["dns:host.bad.example.com"]),
        ("www.example.com", ["dns:www.example.com", "ip:10.0.0.1"]),
        ("www.other.org", ["ip:192.0.2.6"]),  # its host-like CN is held to the DNS ones
    ]:
        body = {"common_name": common_name, "ca_id": root["id"], "san": san}
        assert "name constraints" in error(api.post(f"{API}/certificates", json=body), 422)
    inter = create_intermediate(api, root["id"], unique("Constrained Issuing"))
    body = {"common_name": "www.other.org", "ca_id": inter["id"], "key_algorithm": "EC"}
    assert "name constraints" in error(api.post(f"{API}/certificates", json=body), 422)
    assert data(api.get(f"{API}/certificates/stats"))["total"] == before
    below = issue(api, inter["id"], "api.example.com")
    chain = pem_blocks(
        download(api, f"{API}/certificates/{below['id']}/export", format="chain").text
    )
    assert len(chain) == 3
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    assert pkilint_findings(workdir, chain[1], "constrained-inter.pem") == ""


def test_import_duplicate_is_a_conflict(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign Twice")
    data(import_ca_file(api, ext.pem.encode(), "once.pem"), 201)
    before = ca_total(api)
    error(import_ca_file(api, ext.der, "twice.der"), 409)
    error(import_ca_file(api, ext.pkcs12("pw"), "twice.p12", password="pw"), 409)
    native = create_root(api, unique("Native Root"))
    pem = download(api, f"{API}/cas/{native['id']}/export").text
    error(import_ca_file(api, pem.encode(), "native.pem"), 409)
    assert ca_total(api) == before + 1  # only the native root was added


def test_import_refuses_non_ca_and_garbage(api: httpx.Client, workdir: Path) -> None:
    root = foreign_root(workdir, "/CN=Foreign Leaf Issuer")
    leaf = foreign_signed(workdir, root, "/CN=leaf.foreign.test", extensions="v3_leaf")
    before = ca_total(api)
    assert "CA" in error(import_ca_file(api, leaf.pem.encode(), "leaf.pem"), 422)
    error(import_ca_file(api, b"this is not a certificate", "junk.pem"), 400)
    error(import_ca_file(api, b"", "empty.pem"), 400)
    missing_file = api.post(f"{API}/cas/import", data={"name": "no file"}, files={"x": b"y"})
    error(missing_file, 400)
    assert ca_total(api) == before


def test_import_json_with_private_key(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign JSON Root", key="ec:P-384")
    response = api.post(
        f"{API}/cas/import",
        json={"certificate": ext.pem, "private_key": ext.key_pem, "name": "JSON Root"},
    )
    ca = data(response, 201)
    assert ca["name"] == "JSON Root" and ca["has_private_key"] is True
    assert ca["key_algorithm"] == "EC" and ca["key_size"] == 384
    leaf = issue(api, ca["id"], "json-imported.example.com")
    pem = download(api, f"{API}/certificates/{leaf['id']}/export").text
    assert "OK" in openssl_verify(workdir, pem, [ext.pem])


def test_import_mismatched_private_key(api: httpx.Client, workdir: Path) -> None:
    ext = foreign_root(workdir, "/CN=Foreign Mismatch Root")
    stranger = foreign_root(workdir, "/CN=Foreign Stranger")
    before = ca_total(api)
    response = api.post(
        f"{API}/cas/import", json={"certificate": ext.pem, "private_key": stranger.key_pem}
    )
    assert "private key" in error(response, 422)
    combined = (ext.pem + stranger.key_pem).encode()
    error(import_ca_file(api, combined, "mismatch.pem"), 422)
    assert ca_total(api) == before
    # Nothing was half-written: the same certificate imports fine with its own key.
    fine = api.post(f"{API}/cas/import", json={"certificate": ext.pem, "private_key": ext.key_pem})
    assert data(fine, 201)["has_private_key"] is True


@pytest.mark.parametrize("import_key", ["true", "1", "yes"])
def test_import_key_flag_truthy_spellings(
    api: httpx.Client, workdir: Path, import_key: str
) -> None:
    ext = foreign_root(workdir, f"/CN=Foreign Flag {import_key}")
    ca = data(
        import_ca_file(api, ext.pkcs12("pw"), "f.p12", password="pw", import_key=import_key), 201
    )
    assert ca["has_private_key"] is True
