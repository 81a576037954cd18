"""A subject emailAddress is signed as an rfc822Name SAN too (core/profile.py
`with_subject_emails`): the inventory's row names the SANs the certificate carries, so the
listing's `san` and the search find the address as they find any other SAN."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import API, cert_of, create_root, data, issue, unique
from tests.e2e.test_scep_protocol import (
    BAD_REQUEST,
    FAILURE,
    RENEWAL_REQ,
    SUCCESS,
    Client,
    Scep,
    ca_certificates,
    default_profile,
    new_client,
    pki_message,
    profile,
    read_reply,
    scep_requests,
    split,
)
from tests.support import Server


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP Email SAN Root") as made:
        yield made


def test_the_inventory_lists_the_email_san_the_subject_adds(api: httpx.Client) -> None:
    root = create_root(api, unique("Email SAN Root"))
    mailbox = f"{unique('mbox').lower()}@example.com"
    issued = issue(api, root["id"], "person.example.com", email=mailbox)
    shown: dict[str, Any] = data(api.get(f"{API}/certificates/{issued['id']}"))
    sans = cert_of(shown["pem"]).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert mailbox in sans.value.get_values_for_type(x509.RFC822Name)  # signed
    listed = api.get(f"{API}/certificates", params={"ca_id": root["id"]}).json()["data"]
    assert [c["san"] for c in listed] == [["dns:person.example.com", f"email:{mailbox}"]]
    found = api.get(f"{API}/certificates", params={"search": mailbox}).json()["data"]
    assert [c["id"] for c in found] == [issued["id"]]


def _csr_with_email(client: Client, cn: str, mailbox: str, challenge: str | None) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, mailbox),
        ]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    san = x509.SubjectAlternativeName([x509.DNSName(cn)])
    builder = builder.add_extension(san, critical=False)
    if challenge is not None:
        builder = builder.add_attribute(
            x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode()
        )
    csr = builder.sign(client.key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def test_a_scep_renewal_with_the_enrolment_csr_names_renews(scep: Scep) -> None:
    """A device renews with a CSR naming what its enrolment CSR named (RFC 8894 3.3.1.2):
    its subject's emailAddress is the SAN the issuance added, not a name it changed."""
    device = new_client()
    cn, mailbox = f"{unique('renewer').lower()}.example.com", "device@example.com"
    _, enrolled = scep.enroll(device, _csr_with_email(device, cn, mailbox, scep.challenge))
    assert enrolled.status == SUCCESS, enrolled
    (issued,) = enrolled.certificates
    holder = Client(device.key, issued)
    renewal = _csr_with_email(holder, cn, mailbox, None)
    _, renewed = scep.enroll(holder, renewal, kind=RENEWAL_REQ)
    assert (renewed.status, renewed.fail_info) == (SUCCESS, None)
    assert renewed.certificates[0].serial_number != issued.serial_number


def test_a_queued_scep_request_is_refused_now_for_an_email_no_approval_could_sign(
    scep: Scep, api: httpx.Client
) -> None:
    """The queue refuses at once what no approval could get signed (`check_signable`): a
    subject emailAddress that is no mailbox, which the issuance refuses as a SAN, too."""
    path = profile(api, scep, auto_approve=False)
    _, ra = split(ca_certificates(scep.http, path))
    client = new_client()
    cn = f"{unique('queued-email').lower()}.example.com"
    before = scep_requests(api)
    sent = pki_message(client, ra, _csr_with_email(client, cn, "nobody", scep.challenge))
    reply = read_reply(scep.post(sent, path), client, ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep_requests(api) == before
