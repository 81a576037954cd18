"""Certificates through /api/v2/certificates: filters, renewal, revocation, deletion,
statistics and exports, each read back by openssl."""

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.helpers import (
    API,
    cert_of,
    create_intermediate,
    create_root,
    data,
    download,
    error,
    issue,
    self_signed_ca,
    signed_pem,
    unique,
)
from tests.support import Server
from tests.tools import openssl, openssl_csr, openssl_verify, pem_blocks

UNKNOWN_ID = 987_654_321

# (spelling sent, name shown): the canonical RFC 5280 name, except caCompromise, which the
# native API spells as the seed does (the stored value and CRLs keep cACompromise).
REVOCATION_SPELLINGS = [
    ("unspecified", "unspecified"),
    ("keyCompromise", "keyCompromise"),
    ("key_compromise", "keyCompromise"),
    ("caCompromise", "caCompromise"),
    ("cACompromise", "caCompromise"),
    ("ca_compromise", "caCompromise"),
    ("affiliationChanged", "affiliationChanged"),
    ("affiliation_changed", "affiliationChanged"),
    ("superseded", "superseded"),
    ("cessationOfOperation", "cessationOfOperation"),
    ("cessation_of_operation", "cessationOfOperation"),
    ("certificateHold", "certificateHold"),
    ("certificate_hold", "certificateHold"),
    ("privilegeWithdrawn", "privilegeWithdrawn"),
    ("privilege_withdrawn", "privilegeWithdrawn"),
    ("aACompromise", "aACompromise"),
    ("aa_compromise", "aACompromise"),
]


@pytest.fixture(scope="module")
def issuing(server: Server) -> dict[str, Any]:
    """A root and an issuing CA shared by this module's tests (per backend)."""
    with server.client() as api:
        root = create_root(api, unique("Certs Root"), "EC", 384)
        inter = create_intermediate(api, root["id"], unique("Certs Issuing"))
        return {"root": root, "inter": inter}


def listing(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get(f"{API}/certificates", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(body: dict[str, Any]) -> list[int]:
    return [c["id"] for c in body["data"]]


def stats(api: httpx.Client) -> dict[str, int]:
    counted: dict[str, int] = data(api.get(f"{API}/certificates/stats"))
    return counted


def details(api: httpx.Client, cert_id: int) -> dict[str, Any]:
    shown: dict[str, Any] = data(api.get(f"{API}/certificates/{cert_id}"))
    return shown


def public_key_der(pem: str) -> bytes:
    return (
        cert_of(pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# Listing and filters


def test_status_filters(api: httpx.Client) -> None:
    ca = create_root(api, unique("Status Root"))
    normal = issue(api, ca["id"], "normal.example.com", validity_days=365)
    expiring = issue(api, ca["id"], "expiring.example.com", validity_days=10)
    revoked = issue(api, ca["id"], "revoked.example.com", validity_days=365)
    data(api.post(f"{API}/certificates/{revoked['id']}/revoke", json={"reason": "superseded"}))
    scoped = {"ca_id": ca["id"]}
    assert sorted(ids(listing(api, **scoped))) == sorted(
        [normal["id"], expiring["id"], revoked["id"]]
    )
    active = listing(api, status="active", **scoped)
    assert sorted(ids(active)) == sorted([normal["id"], expiring["id"]])
    assert all(c["status"] == "active" for c in active["data"])
    assert ids(listing(api, status="expiring", **scoped)) == [expiring["id"]]
    assert ids(listing(api, status="revoked", **scoped)) == [revoked["id"]]
    assert listing(api, status="revoked", **scoped)["data"][0]["status"] == "revoked"
    assert listing(api, status="expired", **scoped) == {
        "data": [],
        "meta": {"page": 1, "per_page": 50, "total": 0},
    }
    # Across every CA: an expired filter returns nothing that is still valid or revoked.
    everything = listing(api, status="expired", per_page=100)
    assert all(c["status"] == "expired" for c in everything["data"])
    expiring_all = ids(listing(api, status="expiring", per_page=100))
    assert expiring["id"] in expiring_all and normal["id"] not in expiring_all
    revoked_all = ids(listing(api, status="revoked", per_page=100))
    assert revoked["id"] in revoked_all and normal["id"] not in revoked_all
    assert "status" in error(api.get(f"{API}/certificates", params={"status": "bogus"}), 400)


def short_lived_ca(seconds: int) -> tuple[str, str]:
    """A foreign root (PEM certificate, PEM key) that expires `seconds` from now."""
    cert, key = self_signed_ca(unique("Short Lived Root"), timedelta(seconds=seconds))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def test_expired_certificate(api: httpx.Client) -> None:
    """A leaf may not outlive its issuer: one issued by a CA about to expire expires with it."""
    cert_pem, key_pem = short_lived_ca(seconds=6)
    ca = data(
        api.post(f"{API}/cas/import", json={"certificate": cert_pem, "private_key": key_pem}),
        201,
    )
    before = stats(api)
    leaf = issue(api, ca["id"], "expires-soon.example.com", validity_days=365)
    ca_end = datetime.fromisoformat(ca["valid_until"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(leaf["valid_until"].replace("Z", "+00:00")) <= ca_end
    time.sleep(max((ca_end - datetime.now(UTC)).total_seconds(), 0) + 1.5)
    shown = details(api, leaf["id"])
    assert shown["status"] == "expired" and shown["days_remaining"] == 0
    scoped = {"ca_id": ca["id"]}
    assert ids(listing(api, status="expired", **scoped)) == [leaf["id"]]
    assert listing(api, status="expired", **scoped)["data"][0]["status"] == "expired"
    for other in ("active", "expiring", "revoked"):
        assert ids(listing(api, status=other, **scoped)) == [], other
    assert leaf["id"] in ids(listing(api, status="expired", per_page=100))
    assert leaf["id"] not in ids(listing(api, status="active", per_page=100))
    after = stats(api)
    assert after["expired"] == before["expired"] + 1 and after["total"] == before["total"] + 1
    assert after["active"] == before["active"]
    assert "expired" in error(api.post(f"{API}/certificates/{leaf['id']}/renew", json={}), 409)
    # An expired certificate can still be revoked (it stays revoked, not expired).
    revoked = data(
        api.post(f"{API}/certificates/{leaf['id']}/revoke", json={"reason": "superseded"})
    )
    assert revoked["status"] == "revoked"
    assert ids(listing(api, status="expired", **scoped)) == []


def test_ca_filter(api: httpx.Client) -> None:
    first = create_root(api, unique("Filter A"))
    second = create_root(api, unique("Filter B"))
    a = [issue(api, first["id"], f"a{i}.example.com")["id"] for i in range(2)]
    b = issue(api, second["id"], "b.example.com")["id"]
    shown = listing(api, ca_id=first["id"])
    assert sorted(ids(shown)) == sorted(a) and shown["meta"]["total"] == 2
    assert all(c["ca_id"] == first["id"] for c in shown["data"])
    assert ids(listing(api, ca_id=second["id"])) == [b]
    assert listing(api, ca_id=UNKNOWN_ID)["meta"]["total"] == 0


def test_search_common_name_and_san(api: httpx.Client, issuing: dict[str, Any]) -> None:
    token = unique("zebra")
    ca_id = issuing["inter"]["id"]
    by_cn = issue(api, ca_id, f"{token}.example.com", san=["dns:plain.example.org"])
    by_san = issue(api, ca_id, "Service Without Dots", san=[f"dns:api.{token}-san.example.net"])
    issue(api, ca_id, "unrelated.example.com")
    assert ids(listing(api, search=f"{token}.example")) == [by_cn["id"]]
    assert ids(listing(api, search=f"{token}-san")) == [by_san["id"]]
    both = listing(api, search=token)
    assert sorted(ids(both)) == sorted([by_cn["id"], by_san["id"]])
    assert both["meta"]["total"] == 2
    assert sorted(ids(listing(api, search=token.upper()))) == sorted(ids(both))
    assert ids(listing(api, search="without dots", ca_id=ca_id)) == [by_san["id"]]
    # Wildcards are matched literally.
    assert listing(api, search="%")["meta"]["total"] == 0
    assert listing(api, search="_")["meta"]["total"] == 0
    combined = listing(api, search=token, ca_id=ca_id, status="active")
    assert sorted(ids(combined)) == sorted(ids(both))
    assert listing(api, search=token, status="revoked")["meta"]["total"] == 0


def test_san_values_are_reported_as_issued(api: httpx.Client, issuing: dict[str, Any]) -> None:
    """Search is case-insensitive, but every view shows the names exactly as certified."""
    token = unique("case")
    sans = [
        f"uri:https://Example.com/{token}/Path",
        "email:Alice.Smith@Example.COM",
        "dns:host.example.com",
        "ip:2001:db8::1",
    ]
    issued = issue(api, issuing["inter"]["id"], "Mixed Case Names", san=sans)
    assert issued["san"] == sans
    assert details(api, issued["id"])["san"] == sans
    found = listing(api, search=f"{token}/path")
    assert ids(found) == [issued["id"]] and found["data"][0]["san"] == sans
    assert ids(listing(api, search="alice.smith@example.com", ca_id=issuing["inter"]["id"])) == [
        issued["id"]
    ]
    assert issued["id"] in ids(listing(api, search="2001:db8::1", per_page=100))
    renewed = data(api.post(f"{API}/certificates/{issued['id']}/renew", json={}), 201)
    assert renewed["san"] == sans


def test_pagination(api: httpx.Client) -> None:
    ca = create_root(api, unique("Paging Root"))
    made = [issue(api, ca["id"], f"p{i}.example.com")["id"] for i in range(5)]
    pages = [listing(api, ca_id=ca["id"], page=p, per_page=2) for p in (1, 2, 3, 4)]
    assert [len(p["data"]) for p in pages] == [2, 2, 1, 0]
    for number, page in enumerate(pages, start=1):
        assert page["meta"] == {"page": number, "per_page": 2, "total": 5}
    seen = [i for p in pages for i in ids(p)]
    assert sorted(seen) == sorted(made) and len(set(seen)) == 5
    default = listing(api)
    assert default["meta"]["page"] == 1 and default["meta"]["per_page"] == 50
    assert listing(api, per_page=100)["meta"]["per_page"] == 100
    for bad in ({"per_page": 101}, {"per_page": 0}, {"page": 0}, {"page": "x"}):
        error(api.get(f"{API}/certificates", params=bad), 422)


# Details


@pytest.mark.parametrize(
    ("issuer_algorithm", "issuer_size", "leaf_algorithm", "leaf_size"),
    [
        ("RSA", 2048, "RSA", 3072),
        ("EC", 384, "EC", 256),
        ("Ed25519", None, "Ed25519", None),
        ("EC", 521, "RSA", 2048),
    ],
)
def test_details_match_openssl(
    api: httpx.Client,
    workdir: Path,
    issuer_algorithm: str,
    issuer_size: int | None,
    leaf_algorithm: str,
    leaf_size: int | None,
) -> None:
    ca = create_root(api, unique("Details Root"), issuer_algorithm, issuer_size)
    body: dict[str, Any] = {"key_algorithm": leaf_algorithm, "validity_days": 90}
    if leaf_size:
        body["key_size"] = leaf_size
    cert = issue(api, ca["id"], "details.example.com", **body)
    shown = details(api, cert["id"])
    pem_path = workdir / "leaf.pem"
    pem_path.write_text(shown["pem"])

    def ossl(*args: str) -> str:
        result = openssl("x509", "-in", str(pem_path), "-noout", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode().strip()

    assert ossl("-fingerprint", "-sha256").split("=", 1)[1] == shown["fingerprint_sha256"]
    assert ossl("-fingerprint", "-sha1").split("=", 1)[1] == shown["fingerprint_sha1"]
    assert f"0x{ossl('-serial').split('=', 1)[1].lstrip('0')}" == shown["serial_number"]
    text = ossl("-text")
    signature = text.split("Signature Algorithm:", 1)[1].split("\n", 1)[0].strip()
    assert shown["signature_algorithm"].lower() == signature.lower()
    expected_size = leaf_size or 256
    assert shown["key_algorithm"] == leaf_algorithm and shown["key_size"] == expected_size
    assert cert["key_size"] == expected_size
    if leaf_algorithm == "RSA":
        assert f"Public-Key: ({leaf_size} bit)" in text
    assert shown["days_remaining"] in (89, 90)
    valid_from = datetime.fromisoformat(shown["valid_from"].replace("Z", "+00:00"))
    valid_until = datetime.fromisoformat(shown["valid_until"].replace("Z", "+00:00"))
    assert (valid_until - valid_from).days == 90
    assert shown["is_ca"] is False and shown["ca_id"] == ca["id"]
    assert shown["san"] == ["dns:details.example.com"]
    assert shown["issuer"] == ca["subject"]
    error(api.get(f"{API}/certificates/{UNKNOWN_ID}"), 404)


# Renewal


@pytest.mark.parametrize(("algorithm", "size"), [("RSA", 2048), ("EC", 384), ("Ed25519", None)])
def test_renew_with_server_generated_key(
    api: httpx.Client,
    workdir: Path,
    issuing: dict[str, Any],
    algorithm: str,
    size: int | None,
) -> None:
    body: dict[str, Any] = {
        "key_algorithm": algorithm,
        "validity_days": 60,
        "organization": "Renewals Inc",
        "san": ["dns:renew.example.com", "dns:www.renew.example.com", "ip:192.0.2.44"],
        "extended_key_usage": ["serverAuth", "clientAuth"],
    }
    if size:
        body["key_size"] = size
    old = issue(api, issuing["inter"]["id"], "renew.example.com", **body)
    old_details = details(api, old["id"])
    response = api.post(f"{API}/certificates/{old['id']}/renew", json={"validity_days": 30})
    renewed = data(response, 201)
    assert response.json()["message"] == "Certificate renewed successfully"
    assert renewed["id"] != old["id"] and renewed["status"] == "active"
    assert renewed["private_key_available"] is True
    new_details = details(api, renewed["id"])
    assert new_details["subject"] == old_details["subject"]
    assert new_details["san"] == old_details["san"]
    assert new_details["extended_key_usage"] == old_details["extended_key_usage"]
    assert new_details["key_usage"] == old_details["key_usage"]
    assert new_details["key_algorithm"] == algorithm
    assert new_details["serial_number"] != old_details["serial_number"]
    assert new_details["ca_id"] == old_details["ca_id"]
    assert public_key_der(new_details["pem"]) != public_key_der(old_details["pem"])
    valid_from = datetime.fromisoformat(new_details["valid_from"].replace("Z", "+00:00"))
    valid_until = datetime.fromisoformat(new_details["valid_until"].replace("Z", "+00:00"))
    assert (valid_until - valid_from).days == 30
    chain = pem_blocks(
        download(api, f"{API}/certificates/{renewed['id']}/export", format="chain").text
    )
    assert len(chain) == 3
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    # The new key is exported with the new certificate.
    both = download(
        api, f"{API}/certificates/{renewed['id']}/export", format="pem", include_key="true"
    ).text
    key = serialization.load_pem_private_key(both.encode(), password=None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_key_der(new_details["pem"])
    assert details(api, old["id"])["status"] == "active"  # the old one is left as it was


SMARTCARD_LOGON = "1.3.6.1.4.1.311.20.2.2"  # no name here: given and shown as its OID


def test_an_extended_key_usage_without_a_name_is_given_as_its_oid(
    api: httpx.Client, issuing: dict[str, Any]
) -> None:
    """A purpose this server has no name for is asked for by dotted OID, shown the same way,
    and renewed with the certificate; anything else that is no name nor OID is a 400."""
    ekus = ["clientAuth", SMARTCARD_LOGON]
    old = issue(api, issuing["inter"]["id"], "smartcard.example.com", extended_key_usage=ekus)
    assert details(api, old["id"])["extended_key_usage"] == ekus
    cert = x509.load_pem_x509_certificate(details(api, old["id"])["pem"].encode())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [oid.dotted_string for oid in usage] == ["1.3.6.1.5.5.7.3.2", SMARTCARD_LOGON]
    renewed = data(api.post(f"{API}/certificates/{old['id']}/renew", json={}), 201)
    assert details(api, renewed["id"])["extended_key_usage"] == ekus
    for wrong in ("smartcardLogon", "1.2.03", "1.50", "1.2.x"):
        body = {"common_name": "x.example.com", "ca_id": issuing["inter"]["id"]}
        refused = api.post(f"{API}/certificates", json={**body, "extended_key_usage": [wrong]})
        assert "unknown extended key usage" in error(refused, 400)


def test_a_renewal_certifies_the_names_it_renews_no_more(api: httpx.Client) -> None:
    """A certificate without SANs (made elsewhere, under a CA imported with its key) renews
    without any: the CN-as-SAN default of a new leaf does not apply to a renewal."""
    root, root_key = self_signed_ca(unique("Renewal Names Root"))
    bundle = root.public_bytes(serialization.Encoding.PEM) + root_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {"file": ("root.pem", bundle, "application/octet-stream")}
    ca_id = data(api.post(f"{API}/cas/import", files=files), 201)["id"]
    host = f"{unique('legacy')}.example.com"
    _, leaf = signed_pem(ec.generate_private_key(ec.SECP256R1()), host, (root.subject, root_key))
    imported = data(api.post(f"{API}/certificates/import", json={"certificate": leaf}), 201)
    assert imported["ca_id"] == ca_id and imported["san"] == []
    renewed = data(api.post(f"{API}/certificates/{imported['id']}/renew", json={}), 201)
    assert renewed["common_name"] == host and renewed["san"] == []


def test_renew_csr_certificate_keeps_the_key(
    api: httpx.Client, workdir: Path, issuing: dict[str, Any]
) -> None:
    _, csr = openssl_csr(workdir, "/CN=csr-renew.example.com")
    old = data(
        api.post(
            f"{API}/certificates",
            json={"ca_id": issuing["inter"]["id"], "csr": csr.read_text(), "validity_days": 45},
        ),
        201,
    )
    renewed = data(api.post(f"{API}/certificates/{old['id']}/renew"), 201)
    assert renewed["private_key_available"] is False
    new_pem = details(api, renewed["id"])["pem"]
    assert public_key_der(new_pem) == public_key_der(details(api, old["id"])["pem"])
    valid_from = datetime.fromisoformat(renewed["valid_from"].replace("Z", "+00:00"))
    valid_until = datetime.fromisoformat(renewed["valid_until"].replace("Z", "+00:00"))
    assert (valid_until - valid_from).days == 45  # the old lifetime when none is given
    assert renewed["san"] == old["san"]
    assert details(api, renewed["id"])["subject"] == "CN=csr-renew.example.com"
    error(api.post(f"{API}/certificates/{UNKNOWN_ID}/renew", json={}), 404)


def test_renew_never_recertifies_a_compromised_key(
    api: httpx.Client, workdir: Path, issuing: dict[str, Any]
) -> None:
    def csr_body(name: str) -> dict[str, Any]:
        csr = workdir / f"{name}.csr"
        made = openssl(
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(workdir / f"{name}.key"),
            "-out",
            str(csr),
            "-subj",
            f"/CN={name}.example.com",
        )
        assert made.returncode == 0, made.stderr
        return {"ca_id": issuing["inter"]["id"], "csr": csr.read_text()}

    body = csr_body("compromised")
    from_csr = data(api.post(f"{API}/certificates", json=body), 201)
    same_key = data(api.post(f"{API}/certificates", json=body), 201)
    other_key = data(api.post(f"{API}/certificates", json=csr_body("superseded")), 201)
    for cert, reason in ((from_csr, "keyCompromise"), (other_key, "superseded")):
        data(api.post(f"{API}/certificates/{cert['id']}/revoke", json={"reason": reason}))
    before = listing(api, search="compromised.example.com")["meta"]["total"]
    # The key is distrusted in every certificate that holds it, not only the one revoked.
    for cert in (from_csr, same_key):
        refused = api.post(f"{API}/certificates/{cert['id']}/renew", json={})
        assert "compromised" in error(refused, 422)
    assert listing(api, search="compromised.example.com")["meta"]["total"] == before
    # nor certified from its CSR again, whatever path the CSR takes
    assert "compromised" in error(api.post(f"{API}/certificates", json=body), 422)
    assert listing(api, search="compromised.example.com")["meta"]["total"] == before
    # Superseded is no reason to distrust a key; a server-held key is replaced anyway.
    data(api.post(f"{API}/certificates/{other_key['id']}/renew", json={}), 201)
    held = issue(api, issuing["inter"]["id"], "held-key.example.com")
    data(api.post(f"{API}/certificates/{held['id']}/revoke", json={"reason": "key_compromise"}))
    fresh = data(api.post(f"{API}/certificates/{held['id']}/renew", json={}), 201)
    assert public_key_der(details(api, fresh["id"])["pem"]) != public_key_der(
        details(api, held["id"])["pem"]
    )


# Revocation


@pytest.mark.parametrize(("spelling", "canonical"), REVOCATION_SPELLINGS)
def test_revoke_reason_spellings(
    api: httpx.Client, issuing: dict[str, Any], spelling: str, canonical: str
) -> None:
    cert = issue(api, issuing["inter"]["id"], "revoke.example.com")
    response = api.post(
        f"{API}/certificates/{cert['id']}/revoke",
        json={"reason": spelling, "comments": f"because {spelling}"},
    )
    revoked = data(response)
    assert response.json()["message"] == "Certificate revoked successfully"
    assert revoked["status"] == "revoked" and revoked["revocation_reason"] == canonical
    assert revoked["revoked_at"] is not None
    shown = details(api, cert["id"])
    assert shown["status"] == "revoked" and shown["revocation_reason"] == canonical
    assert shown["revocation_comment"] == f"because {spelling}"
    assert cert["id"] in ids(listing(api, status="revoked", per_page=100))


def test_ca_compromise_is_shown_as_the_seed_spells_it(
    server: Server, api: httpx.Client, issuing: dict[str, Any]
) -> None:
    """Only the native API's rendering changes: the stored reason and the CRL entry are
    RFC 5280's cACompromise."""
    cert = issue(api, issuing["inter"]["id"], "ca-compromise.example.com")
    body = {"reason": "caCompromise"}
    revoked = data(api.post(f"{API}/certificates/{cert['id']}/revoke", json=body))
    assert revoked["revocation_reason"] == "caCompromise"
    assert details(api, cert["id"])["revocation_reason"] == "caCompromise"
    listed = listing(api, status="revoked", per_page=100)["data"]
    assert next(c for c in listed if c["id"] == cert["id"])["revocation_reason"] == "caCompromise"
    stored = stored_reason(server, cert["id"])
    assert stored == "cACompromise"
    data(api.post(f"{API}/crl/{issuing['inter']['id']}/regenerate"))
    crl_pem = data(api.get(f"{API}/crl/{issuing['inter']['id']}"))["crl_pem"]
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    entry = crl.get_revoked_certificate_by_serial_number(int(cert["serial_number"], 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.ca_compromise


def stored_reason(server: Server, cert_id: int) -> str:
    sql = "SELECT revocation_reason FROM certificates WHERE id = ?"
    if server.database_url:
        import psycopg

        with psycopg.connect(server.database_url) as conn:
            row = conn.execute(sql.replace("?", "%s"), (cert_id,)).fetchone()
    else:
        with closing(sqlite3.connect(server.data_dir / "tessera.db", timeout=30)) as conn:
            row = conn.execute(sql, (cert_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_revoke_defaults_and_refusals(api: httpx.Client, issuing: dict[str, Any]) -> None:
    cert = issue(api, issuing["inter"]["id"], "revoke-default.example.com")
    revoked = data(api.post(f"{API}/certificates/{cert['id']}/revoke"))
    assert revoked["revocation_reason"] == "unspecified"
    again = api.post(f"{API}/certificates/{cert['id']}/revoke", json={"reason": "keyCompromise"})
    assert "already revoked" in error(again, 409)
    assert details(api, cert["id"])["revocation_reason"] == "unspecified"
    other = issue(api, issuing["inter"]["id"], "revoke-bad.example.com")
    bad = api.post(f"{API}/certificates/{other['id']}/revoke", json={"reason": "boredom"})
    assert "revocation reason" in error(bad, 400)
    assert details(api, other["id"])["status"] == "active"
    error(api.post(f"{API}/certificates/{UNKNOWN_ID}/revoke", json={}), 404)


def test_a_release_racing_a_permanent_revocation_never_undoes_it(
    server: Server, issuing: dict[str, Any]
) -> None:
    """removeFromCRL and keyCompromise sent at once for a held certificate: whichever wins,
    the other is refused or comes after it, and a certificate revoked for good never ends up
    active (the release used to overwrite it, both answered 200)."""

    def revoke(cert_id: int, reason: str) -> int:
        with server.client() as client:
            path = f"{API}/certificates/{cert_id}/revoke"
            return client.post(path, json={"reason": reason}).status_code

    with server.client() as api:
        for round_ in range(6):
            held = issue(api, issuing["inter"]["id"], f"raced-{round_}.example.com")
            hold = {"reason": "certificateHold"}
            data(api.post(f"{API}/certificates/{held['id']}/revoke", json=hold))
            with ThreadPoolExecutor(2) as pool:
                reasons = ("removeFromCRL", "keyCompromise")
                released, revoked = pool.map(revoke, [held["id"]] * 2, reasons)
            final = details(api, held["id"])
            assert {released, revoked} <= {200, 409}, (released, revoked)
            if revoked == 200:
                assert final["status"] == "revoked", (round_, released, final)
                assert final["revocation_reason"] == "keyCompromise", final
            else:
                assert (released, final["status"]) == (200, "active"), (round_, final)


def test_remove_from_crl_releases_a_hold_only(api: httpx.Client, issuing: dict[str, Any]) -> None:
    """removeFromCRL is not a revocation reason (RFC 5280 5.3.1): it lifts a certificateHold."""
    active = issue(api, issuing["inter"]["id"], "not-held.example.com")
    refused = api.post(
        f"{API}/certificates/{active['id']}/revoke", json={"reason": "removeFromCRL"}
    )
    assert "hold" in error(refused, 409)
    assert details(api, active["id"])["status"] == "active"

    held = issue(api, issuing["inter"]["id"], "held.example.com")
    data(api.post(f"{API}/certificates/{held['id']}/revoke", json={"reason": "certificateHold"}))
    assert details(api, held["id"])["status"] == "revoked"
    release = api.post(
        f"{API}/certificates/{held['id']}/revoke", json={"reason": "remove_from_crl"}
    )
    released = data(release)
    assert release.json()["message"] == "Certificate released from hold"
    assert released["status"] == "active"
    assert released["revocation_reason"] is None and released["revoked_at"] is None
    assert held["id"] not in ids(listing(api, status="revoked", per_page=100))
    # Released, it can be revoked for good afterwards.
    final = data(
        api.post(f"{API}/certificates/{held['id']}/revoke", json={"reason": "keyCompromise"})
    )
    assert final["status"] == "revoked" and final["revocation_reason"] == "keyCompromise"

    permanent = issue(api, issuing["inter"]["id"], "permanent.example.com")
    data(api.post(f"{API}/certificates/{permanent['id']}/revoke", json={"reason": "superseded"}))
    refused = api.post(
        f"{API}/certificates/{permanent['id']}/revoke", json={"reason": "removeFromCRL"}
    )
    error(refused, 409)
    assert details(api, permanent["id"])["revocation_reason"] == "superseded"


# Deletion and statistics


def test_delete(api: httpx.Client, issuing: dict[str, Any]) -> None:
    cert = issue(api, issuing["inter"]["id"], "delete-me.example.com")
    response = api.delete(f"{API}/certificates/{cert['id']}")
    assert response.status_code == 204 and response.content == b""
    error(api.get(f"{API}/certificates/{cert['id']}"), 404)
    error(api.get(f"{API}/certificates/{cert['id']}/export"), 404)
    error(api.delete(f"{API}/certificates/{cert['id']}"), 404)
    assert cert["id"] not in ids(listing(api, ca_id=issuing["inter"]["id"], per_page=100))


def test_stats_follow_changes(api: httpx.Client, issuing: dict[str, Any]) -> None:
    ca_id = issuing["inter"]["id"]
    start = stats(api)
    assert set(start) == {"total", "active", "expired", "revoked", "expiring"}
    assert start["total"] == start["active"] + start["expired"] + start["revoked"]

    def moved(**expected: int) -> None:
        now = stats(api)
        deltas = {k: now[k] - start[k] for k in now}
        assert deltas == {k: expected.get(k, 0) for k in now}, deltas

    long_lived = issue(api, ca_id, "stats-long.example.com", validity_days=365)
    moved(total=1, active=1)
    short = issue(api, ca_id, "stats-short.example.com", validity_days=10)
    moved(total=2, active=2, expiring=1)
    data(api.post(f"{API}/certificates/{short['id']}/revoke", json={"reason": "superseded"}))
    moved(total=2, active=1, revoked=1)
    assert api.delete(f"{API}/certificates/{short['id']}").status_code == 204
    moved(total=1, active=1)
    assert api.delete(f"{API}/certificates/{long_lived['id']}").status_code == 204
    moved()


# Exports


def test_export_round_trips_through_openssl(
    api: httpx.Client, workdir: Path, issuing: dict[str, Any]
) -> None:
    cert = issue(
        api,
        issuing["inter"]["id"],
        "export.example.com",
        key_algorithm="RSA",
        key_size=2048,
    )
    path = f"{API}/certificates/{cert['id']}/export"
    pem = download(api, path, format="pem")
    assert pem.text.count("BEGIN CERTIFICATE") == 1 and "PRIVATE KEY" not in pem.text
    assert pem.headers["content-disposition"] == 'attachment; filename="export.example.com.pem"'
    der = download(api, path, format="der").content
    read = openssl("x509", "-inform", "DER", "-outform", "PEM", input=der)
    assert read.returncode == 0, read.stderr
    assert read.stdout.decode() == pem.text

    chain = pem_blocks(download(api, path, format="chain").text)
    assert len(chain) == 3 and chain[0] == pem.text
    assert cert_of(chain[1]) == cert_of(
        download(api, f"{API}/cas/{issuing['inter']['id']}/export").text
    )
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])

    with_key = download(api, path, format="pem", include_key="true").text
    key_file = workdir / "key.pem"
    key_file.write_text(with_key)
    key_pub = openssl("pkey", "-in", str(key_file), "-pubout")
    assert key_pub.returncode == 0, key_pub.stderr
    (workdir / "leaf.pem").write_text(pem.text)
    cert_pub = openssl("x509", "-in", str(workdir / "leaf.pem"), "-noout", "-pubkey")
    assert key_pub.stdout == cert_pub.stdout

    p12 = download(api, path, format="pkcs12", password="pfx-pass").content
    p12_file = workdir / "bundle.p12"
    p12_file.write_bytes(p12)
    opened = openssl("pkcs12", "-in", str(p12_file), "-info", "-nodes", "-passin", "pass:pfx-pass")
    assert opened.returncode == 0, opened.stderr
    text = opened.stdout.decode()
    assert text.count("BEGIN CERTIFICATE") == 3 and "BEGIN PRIVATE KEY" in text
    (workdir / "from-p12.pem").write_text(text)
    p12_pub = openssl("pkey", "-in", str(workdir / "from-p12.pem"), "-pubout")
    assert p12_pub.stdout == cert_pub.stdout
    wrong = openssl("pkcs12", "-in", str(p12_file), "-nodes", "-passin", "pass:wrong")
    assert wrong.returncode != 0

    assert "password" in error(api.get(path, params={"format": "pkcs12"}), 400)
    error(api.get(path, params={"format": "jks"}), 400)


def test_export_password_without_a_key_is_refused(
    api: httpx.Client, workdir: Path, issuing: dict[str, Any]
) -> None:
    """A password protects an exported key (PEM with include_key) or a PKCS#12 file; with
    neither it would protect nothing, so it is a 400 rather than silently dropped."""
    cert = issue(api, issuing["inter"]["id"], "export-password.example.com")
    path = f"{API}/certificates/{cert['id']}/export"
    for fmt in ("pem", "der", "chain", "pkcs7", "pkcs7-der"):
        refused = api.get(path, params={"format": fmt, "password": "secret-pw"})
        assert "password applies only" in error(refused, 400), fmt
    for fmt in ("der", "chain", "pkcs7", "pkcs7-der"):  # include_key: these hold no key anyway
        asked = {"format": fmt, "include_key": "true", "password": "secret-pw"}
        assert "password applies only" in error(api.get(path, params=asked), 400), fmt
    assert "password applies only" in error(api.get(path, params={"password": "pw"}), 400)
    assert "format must be" in error(api.get(path, params={"format": "jks", "password": "x"}), 400)

    locked = download(api, path, format="pem", include_key="true", password="secret-pw").text
    assert "BEGIN ENCRYPTED PRIVATE KEY" in locked and "BEGIN PRIVATE KEY" not in locked
    key_file = workdir / "locked.pem"
    key_file.write_text(locked)
    opened = openssl("pkey", "-in", str(key_file), "-passin", "pass:secret-pw", "-pubout")
    assert opened.returncode == 0, opened.stderr
    assert download(api, path, format="pkcs12", password="secret-pw").content
    assert "BEGIN CERTIFICATE" in download(api, path, format="pem", password="").text


def test_export_of_a_csr_certificate_has_no_key(
    api: httpx.Client, workdir: Path, issuing: dict[str, Any]
) -> None:
    _, csr = openssl_csr(workdir, "/CN=csr-export.example.com", "rsa:2048")
    cert = data(
        api.post(
            f"{API}/certificates", json={"ca_id": issuing["inter"]["id"], "csr": csr.read_text()}
        ),
        201,
    )
    path = f"{API}/certificates/{cert['id']}/export"
    error(api.get(path, params={"format": "pem", "include_key": "true"}), 404)
    p12 = download(api, path, format="pkcs12", password="pw").content
    (workdir / "nokey.p12").write_bytes(p12)
    opened = openssl("pkcs12", "-in", str(workdir / "nokey.p12"), "-nodes", "-passin", "pass:pw")
    assert opened.returncode == 0, opened.stderr
    assert b"PRIVATE KEY" not in opened.stdout and opened.stdout.count(b"BEGIN CERTIFICATE") == 3
