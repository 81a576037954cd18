"""A subject or issuer that carries emailAddress (1.2.840.113549.1.9.1) is shown by name,
`emailAddress=...` as OpenSSL writes it, not as the dotted OID: for what Tessera issues, for
imported CAs and certificates, CSRs and the trust store. So are the other attribute types
RFC 4514 names no short name for (a device's serialNumber, a router's unstructuredName).
The same text links an imported certificate to its CA, which must keep working with such a
name."""

from pathlib import Path

import httpx

from tests.e2e.helpers import (
    API,
    create_root,
    data,
    foreign_root,
    foreign_signed,
    import_ca_file,
    issue,
    unique,
)
from tests.tools import openssl_csr

DOTTED = "1.2.840.113549.1.9.1"


def test_an_issued_certificate_names_the_email_address(api: httpx.Client) -> None:
    mailbox = f"{unique('ca').lower()}@pki.example"
    root = create_root(api, unique("Email Text Root"), email=mailbox)
    assert f"emailAddress={mailbox}" in root["subject"] and DOTTED not in root["subject"]
    person = f"{unique('person').lower()}@pki.example"
    issued = issue(api, root["id"], "person.example.com", email=person)
    shown = data(api.get(f"{API}/certificates/{issued['id']}"))
    assert shown["subject"] == f"emailAddress={person},CN=person.example.com"
    assert shown["issuer"] == root["subject"]
    listed = data(api.get(f"{API}/certificates", params={"ca_id": root["id"]}))
    assert [c["subject"] for c in listed] == [shown["subject"]]


def test_an_uploaded_csr_names_the_email_address(api: httpx.Client, workdir: Path) -> None:
    _, csr = openssl_csr(workdir, "/CN=mail-csr.example/emailAddress=csr@pki.example")
    body = {"csr": csr.read_text(), "name": unique("email csr")}
    created = data(api.post(f"{API}/csrs", json=body), 201)
    assert created["subject"] == "emailAddress=csr@pki.example,CN=mail-csr.example"


def test_an_imported_certificate_links_to_its_ca_named_with_an_email_address(
    api: httpx.Client, workdir: Path
) -> None:
    """Both orders: a certificate imported under a CA already here is filed under it; a CA
    imported after a certificate it issued adopts it."""
    cn = unique("Email Import Root")
    root = foreign_root(workdir, f"/CN={cn}/emailAddress=root@pki.example")
    ca = data(import_ca_file(api, root.pem.encode(), "root.pem"), 201)
    assert ca["subject"] == f"emailAddress=root@pki.example,CN={cn}"
    leaf = foreign_signed(workdir, root, "/CN=linked.example/emailAddress=l@pki.example", "v3_leaf")
    imported = data(api.post(f"{API}/certificates/import", json={"certificate": leaf.pem}), 201)
    assert imported["ca_id"] == ca["id"]
    assert imported["subject"] == "emailAddress=l@pki.example,CN=linked.example"
    assert imported["issuer"] == ca["subject"]

    other = foreign_root(workdir, f"/CN={unique('Email Adopting Root')}/emailAddress=a@pki.example")
    orphan_leaf = foreign_signed(workdir, other, "/CN=adopted.example", "v3_leaf")
    orphan = data(
        api.post(f"{API}/certificates/import", json={"certificate": orphan_leaf.pem}), 201
    )
    assert orphan["ca_id"] is None
    adopting = data(import_ca_file(api, other.pem.encode(), "other.pem"), 201)
    assert adopting["certificates_count"] == 1
    assert data(api.get(f"{API}/certificates/{orphan['id']}"))["ca_id"] == adopting["id"]


def test_a_trusted_certificate_names_the_email_address(api: httpx.Client, workdir: Path) -> None:
    cn = unique("Email Trusted Root")
    root = foreign_root(workdir, f"/CN={cn}/emailAddress=trust@pki.example")
    added = data(api.post(f"{API}/truststore", json={"certificate": root.pem}), 201)
    assert added["subject"] == added["issuer"] == f"emailAddress=trust@pki.example,CN={cn}"


def test_a_device_subject_names_its_serial_number_and_unstructured_name(
    api: httpx.Client, workdir: Path
) -> None:
    """What a router or a phone puts in its SCEP or CSR subject, as `openssl req` writes it."""
    subject = "/CN=router-7.example/serialNumber=FTX1234/unstructuredName=router-7/title=edge"
    _, csr = openssl_csr(workdir, subject)
    created = data(api.post(f"{API}/csrs", json={"csr": csr.read_text()}), 201)
    named = "title=edge,unstructuredName=router-7,serialNumber=FTX1234,CN=router-7.example"
    assert created["subject"] == named
    root = create_root(api, unique("Device Text Root"))
    signed = api.post(f"{API}/csrs/{created['id']}/sign", json={"ca_id": root["id"]})
    certificate = data(api.get(f"{API}/certificates/{data(signed, 201)['id']}"))
    assert certificate["subject"] == named
