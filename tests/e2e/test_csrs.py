"""Certificate signing requests through /api/v2/csrs: requests made by `openssl req`, uploaded
in each form, decoded (and compared with openssl's own reading), signed through the one
issuance path with templates, checked by openssl and pkilint; keys attached and kept
encrypted; bulk operations, history, export and permissions."""

import ipaddress
import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.helpers import (
    API,
    cert_of,
    create_intermediate,
    create_root,
    data,
    download,
    error,
    unique,
)
from tests.support import Server
from tests.tools import openssl, openssl_csr, openssl_verify, pkilint_findings

CSRS = f"{API}/csrs"
DER = serialization.Encoding.DER
UNKNOWN_ID = 999_999
USER_PASSWORD = "user-password-1234"
SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
# template: (EKUs, validity days, openssl purposes that verify, purposes that must not)
TEMPLATE_EKUS = {
    "Web Server": ([SERVER], 397, ["sslserver"], ["sslclient"]),
    "Client Authentication": ([CLIENT], 365, ["sslclient"], ["sslserver"]),
    "Server and Client": ([SERVER, CLIENT], 397, ["sslserver", "sslclient"], []),
}
OPENSSL_NAMES = {
    "Digital Signature": "digitalSignature",
    "Key Encipherment": "keyEncipherment",
    "TLS Web Server Authentication": "serverAuth",
    "TLS Web Client Authentication": "clientAuth",
}


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuing(server: Server) -> dict[str, Any]:
    """A root and an issuing intermediate shared by the module's tests (per backend)."""
    with server.client() as api:
        root = create_root(api, unique("CSR Root"), "EC", 384)
        inter = create_intermediate(api, root["id"], unique("CSR Issuing"))
        return {"root": root, "inter": inter}


def new_csr(workdir: Path, cn: str, newkey: str = "ec", sans: str | None = None) -> Path:
    """A fresh directory holding k.pem and r.csr made by `openssl req`; returns the CSR."""
    folder = workdir / unique("req")
    folder.mkdir()
    _, csr = openssl_csr(folder, f"/O=Tessera Tests/CN={cn}", newkey, sans or f"DNS:{cn}")
    return csr


def key_of(csr: Path) -> Path:
    return csr.parent / "k.pem"


def upload(api: httpx.Client, csr: Path, name: str | None = None) -> dict[str, Any]:
    created: dict[str, Any] = data(api.post(CSRS, json={"csr": csr.read_text(), "name": name}), 201)
    return created


def sign(api: httpx.Client, csr_id: int, ca_id: int, **extra: Any) -> dict[str, Any]:
    signed: dict[str, Any] = data(
        api.post(f"{CSRS}/{csr_id}/sign", json={"ca_id": ca_id, **extra}), 201
    )
    return signed


def template_id(api: httpx.Client, name: str) -> int:
    return int(next(t["id"] for t in data(api.get(f"{API}/templates")) if t["name"] == name))


def csr_total(api: httpx.Client, **params: Any) -> int:
    response = api.get(CSRS, params=params)
    assert response.status_code == 200, response.text
    return int(response.json()["meta"]["total"])


def certificate_total(api: httpx.Client) -> int:
    return int(data(api.get(f"{API}/certificates/stats"))["total"])


def chain_pems(api: httpx.Client, cert_id: int) -> tuple[str, list[str]]:
    chain = download(api, f"{API}/certificates/{cert_id}/export", format="chain").text
    end = "-----END CERTIFICATE-----"
    blocks = [p.strip() + "\n" + end + "\n" for p in chain.split(end) if "BEGIN" in p]
    return blocks[0], blocks[1:]


def db(server: Server, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """One read-only query on the server's own database (`?` placeholders)."""
    if server.database_url is None:
        with closing(sqlite3.connect(server.data_dir / "tessera.db", timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(server.database_url) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]


def audit_details(server: Server, action: str, csr_id: int) -> list[dict[str, Any]]:
    rows = db(
        server,
        "SELECT details FROM audit_logs WHERE action = ? AND resource_id = ? ORDER BY id",
        (action, str(csr_id)),
    )
    return [json.loads(d) if isinstance(d, str) else d for (d,) in rows]


def pkcs8_der(key: Any) -> bytes:
    der = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
    return bytes(key.private_bytes(*der, serialization.NoEncryption()))


def tampered(csr: Path) -> tuple[bytes, str]:
    """The CSR (DER, PEM) with one bit of its signature flipped: it parses, it does not verify."""
    der = bytearray(x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(DER))
    der[-10] ^= 0x01
    request = x509.load_der_x509_csr(bytes(der))
    assert request.is_signature_valid is False
    return bytes(der), request.public_bytes(serialization.Encoding.PEM).decode()


# --- upload, list, decode -------------------------------------------------------------------------


def test_each_upload_form_stores_the_request(api: httpx.Client, workdir: Path) -> None:
    csrs = [new_csr(workdir, f"form{i}.example.com") for i in range(7)]
    pems = [c.read_text() for c in csrs]
    der = x509.load_pem_x509_csr(csrs[4].read_bytes()).public_bytes(DER)
    der6 = x509.load_pem_x509_csr(csrs[6].read_bytes()).public_bytes(DER)
    forms: list[tuple[str, dict[str, Any]]] = [
        ("", {"json": {"csr": pems[0], "name": "Form JSON"}}),
        ("/upload", {"json": {"pem": pems[1], "name": "Form Pem"}}),
        ("/import", {"files": {"file": ("r.csr", pems[2])}, "data": {"name": "Form Multipart"}}),
        ("/import", {"json": {"pem_content": pems[3], "name": "Form Import"}}),
        ("/import", {"files": {"file": ("r.der", der, "application/pkcs10")}}),
        # The seed's "Upload CSR (Multipart)": a `file` part and an optional `name`.
        ("/upload", {"files": {"file": ("r.csr", pems[5])}, "data": {"name": "Form Upload"}}),
        ("/upload", {"files": {"file": ("r.der", der6, "application/pkcs10")}}),
    ]
    made = [data(api.post(f"{CSRS}{path}", **kwargs), 201) for path, kwargs in forms]
    names = ["Form JSON", "Form Pem", "Form Multipart", "Form Import", "form4.example.com"]
    names += ["Form Upload", "form6.example.com"]
    for index, (row, csr, name) in enumerate(zip(made, csrs, names, strict=True)):
        assert row["name"] == name and row["status"] == "pending"
        assert row["common_name"] == f"form{index}.example.com"
        assert row["san"] == [f"dns:form{index}.example.com"]
        assert (row["key_algorithm"], row["key_size"]) == ("EC", 256)
        assert row["has_private_key"] is False and row["certificate_id"] is None
        shown = data(api.get(f"{CSRS}/{row['id']}"))
        assert shown["pem"] == csr.read_text()  # the same bytes openssl wrote
    pending = api.get(CSRS, params={"status": "pending", "per_page": 100}).json()["data"]
    assert {r["id"] for r in made} <= {r["id"] for r in pending}
    signed = api.get(CSRS, params={"status": "signed", "per_page": 100}).json()["data"]
    assert not {r["id"] for r in made} & {r["id"] for r in signed}


def test_details_match_openssl(api: httpx.Client, workdir: Path) -> None:
    folder = workdir / "detailed"
    folder.mkdir()
    csr = folder / "r.csr"
    made = openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "k.pem"),
        "-out", str(csr), "-subj", "/C=DE/ST=Berlin/O=Acme, Inc./OU=Ops/CN=web.example.com",
        "-addext", "subjectAltName=DNS:web.example.com,IP:10.0.0.5,email:ops@example.com",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", "extendedKeyUsage=serverAuth,clientAuth",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    shown = data(api.get(f"{CSRS}/{upload(api, csr)['id']}"))
    text = openssl("req", "-in", str(csr), "-noout", "-text").stdout.decode()
    subject = openssl("req", "-in", str(csr), "-noout", "-subject", "-nameopt", "RFC2253")
    assert "subject=" + shown["subject"] == subject.stdout.decode().strip()
    assert shown["subject_fields"] == {
        "C": "DE", "ST": "Berlin", "O": "Acme, Inc.", "OU": "Ops", "CN": "web.example.com"
    }  # fmt: skip
    assert f"Public-Key: ({shown['key_size']} bit)" in text and shown["key_algorithm"] == "RSA"
    assert f"Signature Algorithm: {shown['signature_algorithm']}" in text
    assert shown["signature_valid"] is True
    lines = [line.strip() for line in text.splitlines()]
    san_line = lines[lines.index("X509v3 Subject Alternative Name:") + 1]
    openssl_sans = san_line.replace("DNS:", "dns:").replace("IP Address:", "ip:").split(", ")
    assert shown["san"] == openssl_sans and len(openssl_sans) == 3
    extensions = {e["name"]: e for e in shown["extensions"]}
    assert extensions["subjectAltName"]["value"] == shown["san"]
    assert extensions["keyUsage"]["critical"] is ("X509v3 Key Usage: critical" in lines)
    usage = lines[lines.index("X509v3 Key Usage: critical") + 1]
    assert extensions["keyUsage"]["value"] == [OPENSSL_NAMES[n] for n in usage.split(", ")]
    eku = lines[lines.index("X509v3 Extended Key Usage:") + 1]
    assert extensions["extendedKeyUsage"]["value"] == [OPENSSL_NAMES[n] for n in eku.split(", ")]
    assert extensions["extendedKeyUsage"]["critical"] is False
    assert extensions["extendedKeyUsage"]["oid"] == "2.5.29.37"


def test_an_extension_without_a_name_is_shown_by_its_oid(api: httpx.Client, workdir: Path) -> None:
    """An extension cryptography has no name for is named by its OID, as openssl prints it,
    rather than "Unknown OID" (which two such extensions would share)."""
    folder = workdir / unique("custom-ext")
    folder.mkdir()
    csr = folder / "r.csr"
    made = openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(folder / "k.pem"), "-out", str(csr), "-subj", "/CN=custom.example.com",
        "-addext", "subjectAltName=DNS:custom.example.com",
        "-addext", "1.3.6.1.4.1.55555.1=ASN1:UTF8String:first",
        "-addext", "1.3.6.1.4.1.55555.2=critical,ASN1:UTF8String:second",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    shown = data(api.get(f"{CSRS}/{upload(api, csr)['id']}"))
    custom = [e for e in shown["extensions"] if e["oid"].startswith("1.3.6.1.4.1.55555.")]
    assert [(e["name"], e["critical"]) for e in custom] == [
        ("1.3.6.1.4.1.55555.1", False),
        ("1.3.6.1.4.1.55555.2", True),
    ]
    assert custom[0]["value"] == "0c056669727374"  # the UTF8String "first", DER


def test_list_pagination_meta_and_status_filter(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    made = [upload(api, new_csr(workdir, f"page{i}.example.com")) for i in range(3)]
    sign(api, made[0]["id"], issuing["inter"]["id"])
    pending, signed = csr_total(api, status="pending"), csr_total(api, status="signed")
    assert csr_total(api) == pending + signed and signed >= 1 and pending >= 2
    seen: list[int] = []
    for page in range(1, csr_total(api) // 2 + 2):
        body = api.get(CSRS, params={"page": page, "per_page": 2}).json()
        assert body["meta"] == {"page": page, "per_page": 2, "total": pending + signed}
        assert len(body["data"]) <= 2
        seen += [r["id"] for r in body["data"]]
    assert len(seen) == len(set(seen)) == pending + signed
    assert {r["id"] for r in made} <= set(seen)
    only_signed = api.get(CSRS, params={"status": "signed", "per_page": 100}).json()["data"]
    assert made[0]["id"] in {r["id"] for r in only_signed}
    assert all(r["status"] == "signed" for r in only_signed)
    assert "status" in error(api.get(CSRS, params={"status": "approved"}), 400)
    error(api.get(CSRS, params={"per_page": 101}), 422)
    error(api.get(CSRS, params={"page": 0}), 422)


# --- signing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", list(TEMPLATE_EKUS))
def test_sign_with_template(
    server: Server, api: httpx.Client, issuing: dict[str, Any], workdir: Path, template: str
) -> None:
    ekus, days, purposes, refused = TEMPLATE_EKUS[template]
    csr_path = new_csr(
        workdir, "signed.example.com", "rsa:2048", "DNS:signed.example.com,IP:10.1.2.3"
    )
    row = upload(api, csr_path, template)
    tid = template_id(api, template)
    too_long = {"ca_id": issuing["inter"]["id"], "template_id": tid, "validity_days": days + 1}
    before = certificate_total(api)
    assert "at most" in error(api.post(f"{CSRS}/{row['id']}/sign", json=too_long), 422)
    assert data(api.get(f"{CSRS}/{row['id']}"))["status"] == "pending"
    assert certificate_total(api) == before
    issued = sign(api, row["id"], issuing["inter"]["id"], template_id=tid)
    assert issued["source"] == "csr" and issued["template_id"] == tid
    assert issued["ca_id"] == issuing["inter"]["id"] and issued["private_key_available"] is False
    leaf_pem, chain = chain_pems(api, issued["id"])
    cert, request = cert_of(leaf_pem), x509.load_pem_x509_csr(csr_path.read_bytes())
    assert cert.subject == request.subject and cert.public_key() == request.public_key()
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == ekus
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["signed.example.com"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == days
    assert openssl_verify(workdir, leaf_pem, chain).strip().endswith("OK")
    for purpose in purposes:
        verified = openssl_verify_purpose(workdir, leaf_pem, chain, purpose)
        assert verified.returncode == 0, verified.stderr.decode()
    for purpose in refused:
        assert openssl_verify_purpose(workdir, leaf_pem, chain, purpose).returncode != 0
    assert pkilint_findings(workdir, leaf_pem) == ""
    after = data(api.get(f"{CSRS}/{row['id']}"))
    assert after["status"] == "signed" and after["certificate_id"] == issued["id"]
    assert after["signed_at"] is not None
    [event] = audit_details(server, "csr.sign", row["id"])
    assert event["certificate_id"] == issued["id"]
    again = api.post(f"{CSRS}/{row['id']}/sign", json={"ca_id": issuing["inter"]["id"]})
    assert "already signed" in error(again, 409)
    assert certificate_total(api) == before + 1


def openssl_verify_purpose(workdir: Path, leaf_pem: str, chain: list[str], purpose: str) -> Any:
    (workdir / "purpose-root.pem").write_text(chain[-1])
    (workdir / "purpose-untrusted.pem").write_text("".join(chain[:-1]))
    (workdir / "purpose-leaf.pem").write_text(leaf_pem)
    return openssl(
        "verify", "-purpose", purpose, "-CAfile", str(workdir / "purpose-root.pem"),
        "-untrusted", str(workdir / "purpose-untrusted.pem"), str(workdir / "purpose-leaf.pem"),
    )  # fmt: skip


def test_concurrent_signing_certifies_once(
    server: Server, api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    row = upload(api, new_csr(workdir, "race.example.com"))
    before = certificate_total(api)
    statuses: list[int] = []

    def attempt() -> None:
        with server.client() as client:
            body = {"ca_id": issuing["inter"]["id"]}
            statuses.append(client.post(f"{CSRS}/{row['id']}/sign", json=body).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    assert certificate_total(api) == before + 1
    assert len(audit_details(server, "csr.sign", row["id"])) == 1


# A CSR's SANs pass the checks the API applies to its own `san` list (core/names.py), in the
# lint every issuance path goes through; Tessera issues dns, ip, email and uri names only.
BAD_CSR_SANS = {
    "DNS:bad_name!.example": "invalid DNS name in SAN",
    "DNS:127.0.0.1": "is an IP address",
    "DNS:ok.example.com,DNS:a..example.com": "invalid DNS name in SAN",
    "DNS:ok.example.com,email:no-at-sign": "invalid email address in SAN",
    "otherName:1.3.6.1.4.1.311.20.2.3;UTF8:user@example.com": "unsupported SAN type OtherName",
    "RID:1.2.3.4": "unsupported SAN type RegisteredID",
    # A space would also split the name in two in the list view (names are kept space-separated).
    "DNS:ok.example.com,email:first last@example.com": "contains a space",
    "DNS:ok.example.com,URI:https://svc.example.com/a b": "contains a space",
}


@pytest.mark.parametrize("sans", list(BAD_CSR_SANS))
def test_invalid_csr_san_is_refused_and_nothing_written(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path, sans: str
) -> None:
    text = new_csr(workdir, "bad-san.example.com", sans=sans).read_text()
    stored, before = csr_total(api), certificate_total(api)
    # Refused when stored (the inventory holds only requests that can be signed), and when
    # issued from directly: the lint before signing, which ACME, SCEP and renewals go through.
    assert BAD_CSR_SANS[sans] in error(api.post(CSRS, json={"csr": text}), 422)
    direct = {"ca_id": issuing["inter"]["id"], "csr": text}
    assert BAD_CSR_SANS[sans] in error(api.post(f"{API}/certificates", json=direct), 422)
    assert (csr_total(api), certificate_total(api)) == (stored, before)


def test_a_csr_no_ca_could_sign_is_not_stored(api: httpx.Client, workdir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # Over RFC 5280's upper bound for an OU (appendix A.1), which the lint would refuse.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "ou.example.com"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b" * 65),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
    text = csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    before = csr_total(api)
    assert "longer than 64" in error(api.post(CSRS, json={"csr": text}), 422)
    assert csr_total(api) == before


def test_csr_san_rule_is_the_apis(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    ca_id = issuing["inter"]["id"]
    body = {"ca_id": ca_id, "common_name": "api.example.com", "san": ["bad_name!.example"]}
    assert "invalid DNS name in SAN" in error(api.post(f"{API}/certificates", json=body), 400)
    body["san"] = ["dns:127.0.0.1"]
    assert "is an IP address" in error(api.post(f"{API}/certificates", json=body), 400)
    body["san"] = ["email:first last@example.com"]
    assert "contains a space" in error(api.post(f"{API}/certificates", json=body), 400)
    # Wildcards, IDNA A-labels, addresses, mail and URIs are all still issued from a CSR.
    good = "DNS:*.wild.example.com,DNS:xn--bcher-kva.example,IP:10.9.8.7,IP:::1"
    good += ",email:ops@example.com,URI:https://svc.example.com/x"
    row = upload(api, new_csr(workdir, "good-san.example.com", sans=good))
    cert = cert_of(chain_pems(api, sign(api, row["id"], ca_id)["id"])[0])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["*.wild.example.com", "xn--bcher-kva.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.9.8.7", "::1"]
    assert sans.get_values_for_type(x509.RFC822Name) == ["ops@example.com"]


def test_csr_without_san_gets_its_host_cn_as_san(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    """As for the API's common_name: clients ignore the CN, so a host name goes in the SAN."""
    ca_id = issuing["inter"]["id"]
    folder = workdir / unique("cn-only")
    folder.mkdir()
    _, host_csr = openssl_csr(folder, "/O=Tessera Tests/CN=cn-only.example.com")
    assert not x509.load_pem_x509_csr(host_csr.read_bytes()).extensions
    issued = sign(api, upload(api, host_csr)["id"], ca_id)
    leaf_pem, _ = chain_pems(api, issued["id"])
    cert = cert_of(leaf_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.DNSName("cn-only.example.com")]
    assert issued["san"] == ["dns:cn-only.example.com"]
    assert pkilint_findings(workdir, leaf_pem) == ""
    # A CN that is no host name (a person's name) gets no SAN, as through the API.
    person = workdir / unique("cn-person")
    person.mkdir()
    _, person_csr = openssl_csr(person, "/O=Tessera Tests/CN=Alice Example")
    issued = sign(api, upload(api, person_csr)["id"], ca_id)
    cert = cert_of(chain_pems(api, issued["id"])[0])
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_csr_with_several_cns_gets_each_host_cn_as_san(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    """A CSR naming two hosts in two CNs, and no SAN, got no SAN at all (only a lone CN was
    taken): each CN that names a host or an address is one, once, in order."""
    folder = workdir / unique("two-cns")
    folder.mkdir()
    subject = "/O=Tessera Tests/CN=one.example.com/CN=Alice Example/CN=10.1.2.3/CN=one.example.com"
    _, csr = openssl_csr(folder, subject)
    assert len(x509.load_pem_x509_csr(csr.read_bytes()).subject) == 5
    issued = sign(api, upload(api, csr)["id"], issuing["inter"]["id"])
    assert issued["san"] == ["dns:one.example.com", "ip:10.1.2.3"]
    cert = cert_of(chain_pems(api, issued["id"])[0])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [
        x509.DNSName("one.example.com"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
    ]


def _asking_csr() -> str:
    """A CSR asking for names and for more than a leaf may have: CA:TRUE, certificate
    signing, code signing, and a subject key identifier of its own choosing."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("asks.example.com"), x509.DNSName("also.example.com")]
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asks.example.com")]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier(b"\x01" * 20), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_a_csrs_requested_extensions_when_signed(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    """The SANs a CSR asks for are certified when the request names none (both signing
    paths); its basic constraints, key usage and EKU are not copied (docs/issuance.md): what
    a certificate may do is the template's or the request's, never the requester's word."""
    ca_id = issuing["inter"]["id"]
    pem = _asking_csr()
    uploaded = data(api.post(CSRS, json={"csr": pem}), 201)
    assert uploaded["san"] == ["dns:asks.example.com", "dns:also.example.com"]
    by_sign = sign(api, uploaded["id"], ca_id)
    by_api = data(api.post(f"{API}/certificates", json={"csr": pem, "ca_id": ca_id}), 201)
    for issued in (by_sign, by_api):
        assert issued["san"] == ["dns:asks.example.com", "dns:also.example.com"]
        leaf_pem = chain_pems(api, issued["id"])[0]
        cert = cert_of(leaf_pem)
        extensions = cert.extensions
        sans = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["asks.example.com", "also.example.com"]
        assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
        ekus = list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert ekus == [SERVER, CLIENT]
        ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
        assert pkilint_findings(workdir, leaf_pem) == ""
    # The request's own names and usages, when it gives them, are the ones certified.
    body = {"csr": pem, "ca_id": ca_id, "san": ["dns:asks.example.com"]}
    body["extended_key_usage"] = ["clientAuth"]
    asked = data(api.post(f"{API}/certificates", json=body), 201)
    assert asked["san"] == ["dns:asks.example.com"]
    cert = cert_of(chain_pems(api, asked["id"])[0])
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [CLIENT]


# --- private keys ---------------------------------------------------------------------------------


def test_a_single_label_cn_is_no_san(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    """A CN of one label ("device-42") names a device or an account as often as a host, and
    as a dNSName it is no fully qualified name (pkilint: invalid_domain_name_syntax): it is
    no SAN unless asked for, through the API's common_name or a CSR's subject."""
    ca_id = issuing["inter"]["id"]
    label = unique("device")
    body = {"common_name": label, "ca_id": ca_id, "key_algorithm": "EC"}
    issued = data(api.post(f"{API}/certificates", json=body), 201)
    assert issued["san"] == []
    assert pkilint_findings(workdir, chain_pems(api, issued["id"])[0]) == ""
    _, csr = openssl_csr(workdir, f"/CN={label}-csr")
    signed = sign(api, upload(api, csr)["id"], ca_id)
    assert signed["san"] == []
    asked = {**body, "san": [f"dns:{label}"]}
    assert data(api.post(f"{API}/certificates", json=asked), 201)["san"] == [f"dns:{label}"]


def test_attached_key_travels_to_the_certificate_encrypted(
    server: Server, api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    csr = new_csr(workdir, "keyed.example.com")
    row = upload(api, csr)
    key_pem = key_of(csr).read_text()
    attached = data(api.post(f"{CSRS}/{row['id']}/key", json={"key": key_pem}))
    assert attached["has_private_key"] is True
    assert "already has a private key" in error(
        api.post(f"{CSRS}/{row['id']}/key", json={"key": key_pem}), 409
    )
    original = serialization.load_pem_private_key(key_pem.encode(), password=None)
    [(token,)] = db(server, "SELECT encrypted_private_key FROM csrs WHERE id = ?", (row["id"],))
    assert token.startswith("gAAAAA") and "PRIVATE KEY" not in token
    assert pkcs8_der(original) not in token.encode()
    fernet = Fernet((server.data_dir / "kek").read_bytes().strip())
    assert fernet.decrypt(token.encode()) == pkcs8_der(original)
    assert "PRIVATE" not in json.dumps(audit_details(server, "csr.attach_key", row["id"]))
    assert len(audit_details(server, "csr.attach_key", row["id"])) == 1
    issued = sign(api, row["id"], issuing["inter"]["id"])
    assert issued["private_key_available"] is True
    [(stored,)] = db(
        server, "SELECT encrypted_private_key FROM certificates WHERE id = ?", (issued["id"],)
    )
    assert stored.startswith("gAAAAA") and fernet.decrypt(stored.encode()) == pkcs8_der(original)
    exported = download(
        api, f"{API}/certificates/{issued['id']}/export", format="pem", include_key="true"
    ).text
    key = serialization.load_pem_private_key(exported.encode(), password=None)
    assert pkcs8_der(key) == pkcs8_der(original)
    assert "already signed" in error(
        api.post(f"{CSRS}/{row['id']}/key", json={"key": key_pem}), 409
    )


def test_signed_request_keeps_no_copy_of_its_key(
    server: Server, api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    """The attached key moves to the certificate: when that is deleted, no copy of the key is
    left behind in the request's history."""
    csr = new_csr(workdir, "moved-key.example.com")
    row = upload(api, csr)
    data(api.post(f"{CSRS}/{row['id']}/key", json={"key": key_of(csr).read_text()}))
    issued = sign(api, row["id"], issuing["inter"]["id"])
    assert issued["private_key_available"] is True
    assert data(api.get(f"{CSRS}/{row['id']}"))["has_private_key"] is False
    assert db(server, "SELECT encrypted_private_key FROM csrs WHERE id = ?", (row["id"],)) == [
        (None,)
    ]


def test_encrypted_key_needs_its_passphrase(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    csr = new_csr(workdir, "locked.example.com", "rsa:2048")
    row = upload(api, csr)
    encrypted = openssl(
        "pkey", "-in", str(key_of(csr)), "-aes256", "-passout", "pass:correct horse"
    ).stdout.decode()
    path = f"{CSRS}/{row['id']}/key"
    assert "password" in error(api.post(path, json={"key": encrypted}), 400)
    error(api.post(path, json={"key": encrypted, "passphrase": "wrong"}), 400)
    assert data(api.get(f"{CSRS}/{row['id']}"))["has_private_key"] is False
    done = api.post(path, json={"key": encrypted, "passphrase": "correct horse"})
    assert data(done)["has_private_key"] is True
    [(token,)] = db(server, "SELECT encrypted_private_key FROM csrs WHERE id = ?", (row["id"],))
    assert token.startswith("gAAAAA") and "ENCRYPTED" not in token


def test_non_matching_or_unreadable_key_is_refused(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    csr, other = new_csr(workdir, "mine.example.com"), new_csr(workdir, "other.example.com")
    rsa_csr = new_csr(workdir, "rsa.example.com", "rsa:2048")
    row = upload(api, csr)
    path = f"{CSRS}/{row['id']}/key"
    for wrong in (key_of(other).read_text(), key_of(rsa_csr).read_text()):
        assert "does not match" in error(api.post(path, json={"key": wrong}), 422)
    error(
        api.post(
            path, json={"key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}
        ),
        400,
    )
    error(api.post(path, json={"key": "not a key"}), 400)
    error(api.post(path, json={"key": ""}), 422)
    assert data(api.get(f"{CSRS}/{row['id']}"))["has_private_key"] is False
    assert db(server, "SELECT encrypted_private_key FROM csrs WHERE id = ?", (row["id"],)) == [
        (None,)
    ]
    assert audit_details(server, "csr.attach_key", row["id"]) == []


# --- refused uploads ------------------------------------------------------------------------------


def upload_each_way(api: httpx.Client, content: bytes) -> list[httpx.Response]:
    text = content.decode(errors="replace")
    return [
        api.post(CSRS, json={"csr": text}),
        api.post(f"{CSRS}/upload", json={"pem": text}),
        api.post(f"{CSRS}/import", json={"pem_content": text}),
        api.post(f"{CSRS}/import", files={"file": ("r.csr", content, "application/pkcs10")}),
        api.post(f"{CSRS}/upload", files={"file": ("r.csr", content, "application/pkcs10")}),
    ]


def test_bad_signature_is_422_in_every_form(api: httpx.Client, workdir: Path) -> None:
    der, pem = tampered(new_csr(workdir, "tampered.example.com"))
    before = csr_total(api)
    for response in upload_each_way(api, pem.encode()):
        assert "signature" in error(response, 422)
    response = api.post(f"{CSRS}/import", files={"file": ("r.der", der, "application/pkcs10")})
    assert "signature" in error(response, 422)
    assert csr_total(api) == before


def test_garbage_and_truncated_are_400(api: httpx.Client, workdir: Path) -> None:
    pem = new_csr(workdir, "cut.example.com").read_bytes()
    lines = pem.splitlines()
    cut = b"\n".join(lines[: len(lines) // 2] + lines[-1:]) + b"\n"
    before = csr_total(api)
    for content in (
        b"this is not a CSR",
        cut,
        pem[: len(pem) // 2],
        b"\x30\x82\x01\x00" + b"\0" * 40,
    ):
        for response in upload_each_way(api, content):
            assert response.status_code in (400, 422), response.text
            error(response, response.status_code)
            if b"\0" not in content:
                assert "certificate signing request" in error(response, 400)
    error(api.post(f"{CSRS}/import", files={"file": ("empty.csr", b"", "text/plain")}), 400)
    two = pem + new_csr(workdir, "second.example.com").read_bytes()
    assert "2 CSRs" in error(api.post(CSRS, json={"csr": two.decode()}), 400)
    assert "pem_content" in error(api.post(f"{CSRS}/import", json={"name": "x"}), 400)
    assert "pem" in error(api.post(f"{CSRS}/upload", json={"name": "x"}), 400)
    no_file = api.post(f"{CSRS}/upload", files={"other": ("r.csr", pem)}, data={"name": "x"})
    assert "'file' part" in error(no_file, 400)
    assert "csr" in error(api.post(CSRS, json={"name": "no csr"}), 422)
    error(api.post(CSRS, content=b'{"csr": ', headers={"content-type": "application/json"}), 400)
    assert csr_total(api) == before


def test_weak_key_and_nul_subject_are_refused(api: httpx.Client) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    nul_key = ec.generate_private_key(ec.SECP256R1())
    weak_csr = built_csr(weak, "weak.example.com")
    nul_csr = built_csr(nul_key, "nul\x00.example.com")
    before = csr_total(api)
    assert "2048" in error(api.post(CSRS, json={"csr": weak_csr}), 422)
    assert "NUL" in error(api.post(CSRS, json={"csr": nul_csr}), 400)
    # 256 and 384 bits, but not the NIST curves Tessera issues for.
    for curve in (ec.SECP256K1(), ec.BrainpoolP256R1(), ec.BrainpoolP384R1()):
        other = built_csr(ec.generate_private_key(curve), "curve.example.com")
        assert curve.name in error(api.post(CSRS, json={"csr": other}), 422)
    assert csr_total(api) == before


def test_the_internal_ca_signs_nothing_but_the_server_certificate(
    api: httpx.Client, workdir: Path
) -> None:
    internal = next(ca for ca in data(api.get("/api/v2/cas")) if ca["internal"])
    target = upload(api, new_csr(workdir, "localhost"))["id"]
    refused = api.post(f"{CSRS}/{target}/sign", json={"ca_id": internal["id"]})
    assert "internal CA" in error(refused, 422)
    assert data(api.get(f"{CSRS}/{target}"))["status"] == "pending"
    direct = {"ca_id": internal["id"], "common_name": "localhost", "san": ["dns:localhost"]}
    error(api.post("/api/v2/certificates", json=direct), 422)
    child = {"common_name": "Under Internal", "ca_type": "intermediate"}
    error(api.post("/api/v2/cas", json={**child, "parent_id": internal["id"]}), 422)
    error(api.patch("/api/v2/acme/settings", json={"issuing_ca_id": internal["id"]}), 400)
    scep = {"enabled": True, "ca_id": internal["id"]}
    assert "internal" in error(api.patch("/api/v2/scep/config", json=scep), 422)
    listed = data(api.get(f"/api/v2/cas/{internal['id']}/certificates", params={"per_page": 100}))
    assert [c["common_name"] for c in listed] == ["localhost"]  # the server's own, only


def built_csr(key: Any, cn: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


# --- history, export, delete, bulk ----------------------------------------------------------------


def test_history_lists_signed_requests(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    first, second, waiting = (upload(api, new_csr(workdir, f"h{i}.example.com")) for i in range(3))
    sign(api, first["id"], issuing["inter"]["id"])
    sign(api, second["id"], issuing["inter"]["id"])
    body = api.get(f"{CSRS}/history", params={"per_page": 100}).json()
    listed = [r["id"] for r in body["data"]]
    assert listed[:2] == [second["id"], first["id"]]  # the most recently signed first
    assert waiting["id"] not in listed and all(r["status"] == "signed" for r in body["data"])
    assert all(r["certificate_id"] and r["signed_at"] for r in body["data"])
    assert body["meta"] == {"page": 1, "per_page": 100, "total": csr_total(api, status="signed")}
    one = api.get(f"{CSRS}/history", params={"per_page": 1, "page": 2}).json()
    assert [r["id"] for r in one["data"]] == [first["id"]]


def test_export_is_the_pem(api: httpx.Client, workdir: Path) -> None:
    csr = new_csr(workdir, "export.example.com")
    row = upload(api, csr, "Export Me")
    exported = download(api, f"{CSRS}/{row['id']}/export")
    assert exported.text == csr.read_text()
    assert exported.headers["content-disposition"] == 'attachment; filename="Export_Me.csr"'
    (workdir / "exported.csr").write_bytes(exported.content)
    checked = openssl("req", "-in", str(workdir / "exported.csr"), "-noout", "-verify")
    assert checked.returncode == 0 and b"verify OK" in checked.stdout + checked.stderr


def test_delete_keeps_the_certificate(
    server: Server, api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    pending, signed = (upload(api, new_csr(workdir, f"d{i}.example.com")) for i in range(2))
    issued = sign(api, signed["id"], issuing["inter"]["id"])
    for row in (pending, signed):
        assert api.delete(f"{CSRS}/{row['id']}").status_code == 204
        error(api.get(f"{CSRS}/{row['id']}"), 404)
        assert len(audit_details(server, "csr.delete", row["id"])) == 1
    assert data(api.get(f"{API}/certificates/{issued['id']}"))["status"] == "active"


def test_bulk_sign_reports_each_id(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    good = [upload(api, new_csr(workdir, f"bulk{i}.example.com"))["id"] for i in range(2)]
    done = upload(api, new_csr(workdir, "bulk-done.example.com"))["id"]
    sign(api, done, issuing["inter"]["id"])
    ca_id = issuing["inter"]["id"]
    before = certificate_total(api)
    for missing in ({"ca_id": UNKNOWN_ID}, {"ca_id": ca_id, "template_id": UNKNOWN_ID}):
        body = {"ids": good, **missing}
        assert str(UNKNOWN_ID) in error(api.post(f"{CSRS}/bulk/sign", json=body), 404)
    assert certificate_total(api) == before
    ids = [good[0], done, UNKNOWN_ID, good[1]]
    tid = template_id(api, "Web Server")
    result = data(
        api.post(f"{CSRS}/bulk/sign", json={"ids": ids, "ca_id": ca_id, "template_id": tid})
    )
    assert result["success"] == good and result["failed"] == [done, UNKNOWN_ID]
    reasons = {e["id"]: e["error"] for e in result["errors"]}
    assert "already signed" in reasons[done] and "not found" in reasons[UNKNOWN_ID]
    assert certificate_total(api) == before + 2
    for csr_id in good:
        shown = data(api.get(f"{CSRS}/{csr_id}"))
        cert = data(api.get(f"{API}/certificates/{shown['certificate_id']}"))
        assert cert["template_id"] == tid and cert["extended_key_usage"] == ["serverAuth"]


def test_bulk_delete_reports_each_id(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    pending, signed = (upload(api, new_csr(workdir, f"bd{i}.example.com"))["id"] for i in range(2))
    sign(api, signed, issuing["inter"]["id"])
    ids = [pending, UNKNOWN_ID, signed, pending]
    result = data(api.post(f"{CSRS}/bulk/delete", json={"ids": ids}))
    assert result["success"] == [pending, signed]
    assert result["failed"] == [UNKNOWN_ID]  # a repeated id is answered once
    for csr_id in (pending, signed):
        error(api.get(f"{CSRS}/{csr_id}"), 404)
    error(api.post(f"{CSRS}/bulk/delete", json={"ids": []}), 422)


UNKNOWN = [
    ("GET", f"{CSRS}/{UNKNOWN_ID}", None),
    ("DELETE", f"{CSRS}/{UNKNOWN_ID}", None),
    ("GET", f"{CSRS}/{UNKNOWN_ID}/export", None),
    ("POST", f"{CSRS}/{UNKNOWN_ID}/sign", {"ca_id": 1}),
    ("POST", f"{CSRS}/{UNKNOWN_ID}/key", {"key": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), UNKNOWN)
def test_unknown_ids_are_404(api: httpx.Client, method: str, path: str, body: Any) -> None:
    assert str(UNKNOWN_ID) in error(api.request(method, path, json=body), 404)


def test_unknown_ca_or_template_leaves_the_request_pending(
    api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    row = upload(api, new_csr(workdir, "orphan.example.com"))
    path = f"{CSRS}/{row['id']}/sign"
    assert f"CA {UNKNOWN_ID}" in error(api.post(path, json={"ca_id": UNKNOWN_ID}), 404)
    missing = {"ca_id": issuing["inter"]["id"], "template_id": UNKNOWN_ID}
    assert f"template {UNKNOWN_ID}" in error(api.post(path, json=missing), 404)
    error(api.post(path, json={"ca_id": "first"}), 422)
    assert data(api.get(f"{CSRS}/{row['id']}"))["status"] == "pending"


# --- permissions ----------------------------------------------------------------------------------


def user_key(server: Server, api: httpx.Client, role: str) -> tuple[str, str]:
    """A new user with this role and an API key made through that user's own session."""
    username = unique(role)
    body = {"username": username, "password": USER_PASSWORD, "role": role}
    data(api.post(f"{API}/users", json=body), 201)
    with server.client(api_key="") as client:
        login = client.post(
            f"{API}/auth/login/password", json={"username": username, "password": USER_PASSWORD}
        )
        csrf = data(login)["csrf_token"]
        made = client.post(
            f"{API}/account/apikeys", json={"name": "own"}, headers={"X-CSRF-Token": csrf}
        )
        return username, str(data(made, 201)["key"])


def scoped_key(api: httpx.Client, *permissions: str) -> str:
    made = api.post(f"{API}/account/apikeys", json={"name": "scoped", "permissions": permissions})
    return str(data(made, 201)["key"])


def test_operator_signs_and_narrower_keys_cannot(
    server: Server, api: httpx.Client, issuing: dict[str, Any], workdir: Path
) -> None:
    ca_id = issuing["inter"]["id"]
    username, key = user_key(server, api, "operator")
    with server.client(api_key=key) as operator:
        row = upload(operator, new_csr(workdir, "operator.example.com"))
        assert row["created_by"] == username
        assert sign(operator, row["id"], ca_id)["created_by"] == username
    target = upload(api, new_csr(workdir, "guarded.example.com"))["id"]
    sign_body = {"ca_id": ca_id}
    with server.client(api_key=user_key(server, api, "viewer")[1]) as viewer:
        assert data(viewer.get(f"{CSRS}/{target}"))["id"] == target
        error(viewer.post(f"{CSRS}/{target}/sign", json=sign_body), 403)
        error(viewer.delete(f"{CSRS}/{target}"), 403)
    with server.client(api_key=scoped_key(api, "read:csrs")) as reader:
        assert target in [r["id"] for r in data(reader.get(CSRS, params={"per_page": 100}))]
        assert "write:csrs" in error(reader.post(f"{CSRS}/{target}/sign", json=sign_body), 403)
        csr_text = new_csr(workdir, "reader.example.com").read_text()
        error(reader.post(CSRS, json={"csr": csr_text}), 403)
        error(reader.post(f"{CSRS}/bulk/sign", json={"ids": [target], **sign_body}), 403)
    with server.client(api_key=scoped_key(api, "read:csrs", "write:csrs")) as writer:
        upload(writer, new_csr(workdir, "writer.example.com"))
        refused = writer.post(f"{CSRS}/{target}/sign", json=sign_body)
        assert "write:certificates" in error(refused, 403)
    with server.client(api_key="") as anonymous:
        error(anonymous.get(CSRS), 401)
    assert data(api.get(f"{CSRS}/{target}"))["status"] == "pending"
