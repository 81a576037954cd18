"""The inventory endpoints of seed 000 (CSRs, trust store, smart import, certificate tools,
import) with odd but legal input: the subject alternative names Tessera does not issue but
imported certificates carry, the same CSR sent twice, a file sent as a form field."""

import base64
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asn1crypto import core as asn1
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import API, data, error, unique
from tests.support import Server
from tests.tools import openssl

PEM = serialization.Encoding.PEM
UPN = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # Microsoft's user principal name
GUID = x509.ObjectIdentifier("1.3.6.1.4.1.311.25.1")  # a domain controller's GUID (OCTET STRING)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate_with_every_san_kind(common_name: str) -> x509.Certificate:
    """A certificate as Active Directory issues them: a UPN and a GUID other name, a directory
    name and a registered id besides the DNS name, with spaces inside two of them."""
    key = ec.generate_private_key(ec.SECP256R1())
    directory = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Jane Doe"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
        ]
    )
    sans = x509.SubjectAlternativeName(
        [
            x509.DNSName("jane.example.com"),
            x509.OtherName(UPN, asn1.UTF8String("jane doe@corp.example.com").dump()),
            x509.OtherName(GUID, asn1.OctetString(bytes(range(16))).dump()),
            x509.DirectoryName(directory),
            x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
        ]
    )
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(sans, critical=False)
        .sign(key, hashes.SHA256())
    )


# Each name whole, in one entry: RFC 4514 text with white space hex-escaped (`\20`).
EVERY_SAN_KIND = [
    "dns:jane.example.com",
    "othername:1.3.6.1.4.1.311.20.2.3=jane\\20doe@corp.example.com",
    "othername:1.3.6.1.4.1.311.25.1=#0410" + bytes(range(16)).hex(),
    "dirname:O=Acme,CN=Jane\\20Doe",
    "rid:1.2.3.4",
]


def test_sans_tessera_does_not_issue_are_shown_whole_and_readable(api: httpx.Client) -> None:
    """Other names, directory names and registered ids were shown as Python reprs
    (`other:b'\\x0c...'`, `other:<Name(CN=dir)>`), and cut at their spaces into several
    entries in the inventory's listings."""
    common_name = unique("ad-user")
    cert = _certificate_with_every_san_kind(common_name)
    pem = cert.public_bytes(PEM).decode()
    imported = data(api.post(f"{API}/certificates/import", json={"certificate": pem}), 201)
    assert imported["san"] == EVERY_SAN_KIND
    assert data(api.get(f"{API}/certificates/{imported['id']}"))["san"] == EVERY_SAN_KIND
    found = data(api.get(f"{API}/search", params={"q": common_name}))["certificates"]
    assert [row["san"] for row in found] == [EVERY_SAN_KIND]
    assert data(api.post(f"{API}/tools/decode-cert", json={"pem": pem}))["san"] == EVERY_SAN_KIND
    analyzed = data(api.post(f"{API}/import/analyze", json={"content": pem}))
    assert analyzed["objects"][0]["details"]["san"] == EVERY_SAN_KIND
    trusted = data(api.post(f"{API}/truststore", json={"certificate": pem}), 201)
    assert data(api.get(f"{API}/truststore/{trusted['id']}"))["san"] == EVERY_SAN_KIND
    # The directory name reads back as the very name (RFC 4514 allows `\20` for a space).
    directory = x509.Name.from_rfc4514_string(EVERY_SAN_KIND[3].removeprefix("dirname:"))
    assert (
        directory
        == cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DirectoryName)[0]
    )


def test_an_imported_certificate_with_other_names_renews_with_the_names_tessera_issues(
    api: httpx.Client,
) -> None:
    root = data(
        api.post(
            f"{API}/cas",
            json={"common_name": unique("renewer"), "key_algorithm": "EC", "key_size": 256},
        ),
        201,
    )
    pem = _certificate_with_every_san_kind(unique("ad-user")).public_bytes(PEM).decode()
    imported = data(api.post(f"{API}/certificates/import", json={"certificate": pem}), 201)
    renewed: Any = data(
        api.post(f"{API}/certificates/{imported['id']}/renew", json={"ca_id": root["id"]}), 201
    )
    assert renewed["san"] == ["dns:jane.example.com"]


def _csr(common_name: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name))
    return builder.sign(key, hashes.SHA256())


def test_the_same_csr_is_not_queued_twice_but_may_come_again_once_signed(
    api: httpx.Client,
) -> None:
    """Each upload of one request was stored as one more pending CSR, which could then be
    signed once per copy; smart import already called such a copy a duplicate."""
    csr = _csr(unique("queued-once"))
    pem = csr.public_bytes(PEM).decode()
    first = data(api.post(f"{API}/csrs", json={"csr": pem, "name": "first"}), 201)
    told = f"this CSR is already pending (CSR {first['id']})"
    # The same request however it is sent: other PEM line endings, DER, another endpoint.
    again = [
        api.post(f"{API}/csrs", json={"csr": pem.replace("\n", "\r\n"), "name": "again"}),
        api.post(f"{API}/csrs/upload", json={"pem": pem}),
        api.post(
            f"{API}/csrs/import",
            files={"file": ("again.der", csr.public_bytes(serialization.Encoding.DER))},
        ),
    ]
    assert [error(response, 409) for response in again] == [told] * 3
    queued = data(api.get(f"{API}/search", params={"q": first["common_name"]}))["csrs"]
    assert [row["id"] for row in queued] == [first["id"]]
    root = data(
        api.post(
            f"{API}/cas",
            json={"common_name": unique("signer"), "key_algorithm": "EC", "key_size": 256},
        ),
        201,
    )
    data(api.post(f"{API}/csrs/{first['id']}/sign", json={"ca_id": root["id"]}), 201)
    # Signed, the request may be sent again (a renewal with the same CSR) and queued once.
    renewal = data(api.post(f"{API}/csrs/import", json={"pem_content": pem}), 201)
    assert renewal["id"] != first["id"] and renewal["status"] == "pending"
    error(api.post(f"{API}/csrs/upload", json={"pem": pem}), 409)


def _curl_form(server: Server, path: str, *fields: str) -> Any:
    """POST multipart/form-data with curl's -F fields; the answer's JSON."""
    args = ["--cacert", str(server.ca_bundle), "-H", f"X-API-Key: {server.api_key}"]
    for given in fields:
        args += ["-F", given]
    done = subprocess.run(
        ["curl", "-sS", *args, f"{server.url}{API}{path}"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_file_sent_as_a_form_field_is_read_as_the_file(server: Server, workdir: Path) -> None:
    """`curl -F 'file=<x.pem'` sends the file's text as a field without a file name (where
    `file=@x.pem` sends a file part); such a `file` was answered "a 'file' part is
    required"."""
    cert = _certificate_with_every_san_kind(unique("curl-text"))
    cert_path = workdir / "cert.pem"
    cert_path.write_bytes(cert.public_bytes(PEM))
    imported = _curl_form(server, "/certificates/import", f"file=<{cert_path}", "name=by curl")
    assert imported["data"]["descr"] == "by curl", imported
    csr_path = workdir / "request.csr"
    csr_path.write_bytes(_csr(unique("curl-text")).public_bytes(PEM))
    queued = _curl_form(server, "/csrs/import", f"file=<{csr_path}")
    assert queued["data"]["status"] == "pending", queued
    template = workdir / "template.json"
    template.write_text(json.dumps({"name": unique("curl-template"), "validity_days": 90}))
    counts = _curl_form(server, "/templates/import", f"file=<{template}")
    assert counts["data"]["imported"] == 1, counts
    # Sent empty, it is an empty upload, as an empty file part is.
    empty = _curl_form(server, "/certificates/import", "file=")
    assert empty == {"error": True, "code": 400, "message": "the uploaded content is empty"}


def _convert(api: httpx.Client, **body: str) -> bytes:
    converted = data(api.post(f"{API}/tools/convert", json=body))
    return base64.b64decode(converted["content_base64"])


def _openssl_certificates(*args: str, content: bytes) -> list[x509.Certificate]:
    printed = openssl(*args, input=content)
    assert printed.returncode == 0, printed.stderr.decode()
    return x509.load_pem_x509_certificates(printed.stdout)


def test_convert_takes_the_export_names_of_formats_and_writes_each_certificate_once(
    api: httpx.Client,
) -> None:
    """`p12`, `pfx`, `p7b`, `p7c` (which the certificate export takes) were a 400 here; and
    a bundle that lists a certificate twice, or a chain that repeats the leaf, gave a
    PKCS#7 or PKCS#12 file holding the copy."""
    root = _certificate_with_every_san_kind(unique("convert-root"))  # another key's: a chain
    leaf = _certificate_with_every_san_kind(unique("convert-leaf"))
    leaf_pem, root_pem = (c.public_bytes(PEM).decode() for c in (leaf, root))
    twice = leaf_pem + root_pem + leaf_pem
    for alias in ("pkcs7", "p7b"):
        pem_p7 = _convert(api, pem=twice, chain=root_pem, output_format=alias)
        read = _openssl_certificates("pkcs7", "-print_certs", content=pem_p7)
        assert len(read) == 2 and set(read) == {leaf, root}  # a SET OF: DER order
    for alias in ("pkcs7-der", "p7c"):
        der_p7 = _convert(api, pem=twice, output_format=alias)
        read = _openssl_certificates("pkcs7", "-print_certs", "-inform", "DER", content=der_p7)
        assert len(read) == 2 and set(read) == {leaf, root}
    for alias in ("pkcs12", "p12", "pfx"):
        p12 = _convert(api, pem=twice, output_format=alias, password="pw")
        args = ("pkcs12", "-nokeys", "-passin", "pass:pw")
        assert _openssl_certificates(*args, content=p12) == [leaf, root]
    # As an input type too: a PKCS#12 file read back as PEM.
    p12 = _convert(api, pem=leaf_pem, output_format="pkcs12", password="pw")
    body = {"pem": base64.b64encode(p12).decode(), "password": "pw", "output_format": "pem"}
    assert _convert(api, **body, input_type="pfx") == leaf.public_bytes(PEM)


def _issued_today(api: httpx.Client) -> tuple[str, int]:
    trend = data(api.get(f"{API}/dashboard/certificate-trend", params={"days": 1}))["trend"]
    return trend[-1]["date"], trend[-1]["issued"]


def test_the_certificate_trend_counts_issued_certificates_not_imported_ones(
    api: httpx.Client,
) -> None:
    """An import (of last year's certificates, say) was counted as issued on its day."""
    before = _issued_today(api)
    pem = _certificate_with_every_san_kind(unique("imported")).public_bytes(PEM).decode()
    data(api.post(f"{API}/certificates/import", json={"certificate": pem}), 201)
    bundle = "".join(
        _certificate_with_every_san_kind(unique("smart")).public_bytes(PEM).decode()
        for _ in range(2)
    )
    data(api.post(f"{API}/import/execute", json={"content": bundle}))
    assert _issued_today(api) == before
    root = data(
        api.post(
            f"{API}/cas",
            json={"common_name": unique("trend"), "key_algorithm": "EC", "key_size": 256},
        ),
        201,
    )
    data(
        api.post(
            f"{API}/certificates",
            json={"ca_id": root["id"], "common_name": f"{unique('trend')}.example.com"},
        ),
        201,
    )
    assert _issued_today(api) == (before[0], before[1] + 1)


def _openssl_serial(pem: str) -> str:
    """The serial as `openssl x509 -serial` prints it (upper-case hex, `serial=` before it)."""
    printed = openssl("x509", "-noout", "-serial", input=pem.encode())
    assert printed.returncode == 0, printed.stderr.decode()
    return printed.stdout.decode().strip().removeprefix("serial=")


def test_search_finds_a_certificate_and_a_ca_by_serial_number(api: httpx.Client) -> None:
    """A serial (what a CRL, an OCSP log or a browser names a certificate by) found nothing:
    search read only names."""
    root = data(
        api.post(
            f"{API}/cas",
            json={"common_name": unique("by-serial"), "key_algorithm": "EC", "key_size": 256},
        ),
        201,
    )
    issued = data(
        api.post(
            f"{API}/certificates",
            json={"ca_id": root["id"], "common_name": f"{unique('serial')}.example.com"},
        ),
        201,
    )
    pem = data(api.get(f"{API}/certificates/{issued['id']}"))["pem"]
    printed = _openssl_serial(pem)
    assert f"0x{printed.lstrip('0')}" == issued["serial_number"]
    colons = ":".join(printed[i : i + 2] for i in range(0, len(printed), 2)).lower()
    for term in (issued["serial_number"], printed, colons):
        found = data(api.get(f"{API}/search", params={"q": term}))
        assert [c["id"] for c in found["certificates"]] == [issued["id"]], term
    ca_serial = data(api.get(f"{API}/cas/{root['id']}"))["serial_number"]
    found = data(api.get(f"{API}/search", params={"q": ca_serial}))
    assert [c["id"] for c in found["cas"]] == [root["id"]]


def test_a_csr_uploaded_with_its_key_keeps_the_key_for_its_certificate(
    api: httpx.Client, workdir: Path
) -> None:
    """A key in the uploaded file (`openssl req -keyout` and `-out` to one file) or in a
    `private_key` field was dropped without a word: the CSR was stored keyless, and its
    certificate then had no key to export."""
    both = workdir / "request-and-key.pem"
    made = openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/CN={unique('with-key')}.example.com", "-keyout", str(both), "-out", str(both),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    uploaded = data(
        api.post(f"{API}/csrs/import", files={"file": ("both.pem", both.read_bytes())}), 201
    )
    assert uploaded["has_private_key"] is True
    root = data(
        api.post(
            f"{API}/cas",
            json={"common_name": unique("keyed"), "key_algorithm": "EC", "key_size": 256},
        ),
        201,
    )
    cert = data(api.post(f"{API}/csrs/{uploaded['id']}/sign", json={"ca_id": root["id"]}), 201)
    assert cert["private_key_available"] is True
    exported = data(api.post(f"{API}/certificates/{cert['id']}/key", json={}))["private_key"]
    theirs = openssl("pkey", "-in", str(both), "-pubout").stdout
    assert openssl("pkey", "-pubout", input=exported.encode()).stdout == theirs

    # Given apart, encrypted, with its password: kept too.
    csr_path, key_path = workdir / "apart.csr", workdir / "apart.key"
    made = openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-passout", "pass:secret", "-subj", f"/CN={unique('apart')}.example.com",
        "-keyout", str(key_path), "-out", str(csr_path),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    body = {"csr": csr_path.read_text(), "private_key": key_path.read_text()}
    assert "password" in error(api.post(f"{API}/csrs", json=body), 400)
    keyed = data(api.post(f"{API}/csrs", json={**body, "password": "secret"}), 201)
    assert keyed["has_private_key"] is True

    # Another request's key is refused, and the request is not stored without it.
    other = workdir / "other.pem"
    made = openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/CN={unique('mismatch')}.example.com", "-keyout", str(other),
        "-out", str(workdir / "other.csr"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    mismatched = (workdir / "other.csr").read_text()
    refused = api.post(
        f"{API}/csrs/upload",
        json={"pem": mismatched, "private_key": key_path.read_text(), "password": "secret"},
    )
    assert error(refused, 422) == "the private key does not match the CSR's public key"
    common_name = x509.load_pem_x509_csr(mismatched.encode()).subject.rfc4514_string()[3:]
    assert data(api.get(f"{API}/search", params={"q": common_name}))["csrs"] == []


def test_an_upload_sent_as_a_url_encoded_form_is_told_what_to_send(
    server: Server, workdir: Path
) -> None:
    """`curl --data-urlencode 'pem_content@x.csr'` was answered "malformed JSON body", which
    the caller had not sent; JSON sent with curl's default form type still reads as JSON."""
    path = workdir / "request.csr"
    csr = _csr(unique("url-encoded"))
    path.write_bytes(csr.public_bytes(PEM))
    args = ["curl", "-sS", "--cacert", str(server.ca_bundle), "-H", f"X-API-Key: {server.api_key}"]
    url = f"{server.url}{API}/csrs/import"
    form = subprocess.run(
        [*args, "--data-urlencode", f"pem_content@{path}", url], capture_output=True, timeout=60
    )
    assert json.loads(form.stdout) == {
        "error": True,
        "code": 400,
        "message": "a URL-encoded form is not read here: send multipart/form-data or JSON",
    }
    as_json = json.dumps({"pem_content": path.read_text()})
    sent = subprocess.run([*args, "-d", as_json, url], capture_output=True, timeout=60)
    assert json.loads(sent.stdout)["data"]["status"] == "pending"
