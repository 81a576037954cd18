"""SCEP against a real `tessera serve`: what a request may get depends on who sends it.
- A RenewalReq renews only a good certificate of the profile's CA, for the same subject
  and names.
- The answer must be encryptable to the signer before anything is issued or queued.
- Malformed requests that cryptography refuses in its own ways still get a CertRep
  FAILURE (or a 400), never a 500.
- A poll or a re-sent PKCSReq reaches only the requester's own transaction.

The small SCEP client is the one of test_scep_protocol.py; what it cannot do (sign with an
EC key, write a CSR that no library would) is built here with asn1crypto."""

import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tessera.protocols.scep import cms, messages
from tests.e2e.helpers import data, self_signed, unique
from tests.e2e.test_scep_protocol import (
    BAD_CERT_ID,
    BAD_REQUEST,
    CERT_POLL,
    FAILURE,
    PENDING,
    RENEWAL_REQ,
    SUCCESS,
    Client,
    Scep,
    Sent,
    attribute,
    ca_certificates,
    csr_der,
    default_profile,
    issued_named,
    issuer_and_subject,
    new_client,
    pki_message,
    profile,
    read_reply,
    rsa_ca,
    scep_requests,
    split,
)
from tests.support import Server

API = "/api/v2"
BAD_ALG = "0"
CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP Requesters Root") as made:
        yield made


# --- building what the protocol module's client does not --------------------------------


def named_csr(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    cn: str,
    dns_names: Sequence[str] = (),
    challenge: str | None = None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if dns_names:
        sans = x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names])
        builder = builder.add_extension(sans, critical=False)
    if challenge is not None:
        builder = builder.add_attribute(
            x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def issued_by_api(api: httpx.Client, ca_id: int, client: Client, cn: str) -> Client:
    """A certificate for `client`'s key issued through the native API (not SCEP)."""
    csr = x509.load_der_x509_csr(named_csr(client.key, cn))
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    row = data(api.post(f"{API}/certificates", json={"ca_id": ca_id, "csr": pem}), 201)
    exported = api.get(f"{API}/certificates/{row['id']}/export", params={"format": "pem"})
    assert exported.status_code == 200, exported.text
    return Client(client.key, x509.load_pem_x509_certificates(exported.content)[0])


def ec_client(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, self_signed(key, cn)


def ec_signed(
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    ra: x509.Certificate,
    payload: bytes,
    envelope: bytes | None = None,
    kind: str = "19",
    transaction_id: str | None = None,
) -> Sent:
    """A request (PKCSReq unless `kind` says) signed with ECDSA (the server's own `cms.sign`
    signs with RSA only), its payload encrypted to the RA unless `envelope` is given."""
    transaction, nonce = transaction_id or uuid.uuid4().hex, os.urandom(16)
    enveloped = envelope or cms.encrypt_enveloped(payload, ra, "aes128_cbc")
    digest = hashes.Hash(hashes.SHA256())
    digest.update(enveloped)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    parsed_cert = asn1_x509.Certificate.load(cert_der)
    signer_info = asn1_cms.SignerInfo(
        {
            "version": "v1",
            "sid": asn1_cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value={"issuer": parsed_cert.issuer, "serial_number": parsed_cert.serial_number},
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": [
                attribute("content_type", asn1_cms.ContentType("data")),
                attribute("message_digest", core.OctetString(digest.finalize())),
                attribute(messages.OID_MESSAGE_TYPE, core.PrintableString(kind)),
                attribute(messages.OID_TRANSACTION_ID, core.PrintableString(transaction)),
                attribute(messages.OID_SENDER_NONCE, core.OctetString(nonce)),
            ],
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": b"",
        }
    )
    to_sign = b"\x31" + signer_info["signed_attrs"].dump()[1:]
    signer_info["signature"] = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
    signed = asn1_cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "data", "content": enveloped},
            "certificates": [parsed_cert],
            "signer_infos": [signer_info],
        }
    )
    der = asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return Sent(der, transaction, nonce)


def status_of(response: httpx.Response) -> tuple[object, object]:
    """pkiStatus and failInfo of a CertRep we cannot decrypt (it was for an EC signer)."""
    signed = cms.load_signed(response.content)
    found = [signed.attribute(oid) for oid in (messages.OID_PKI_STATUS, messages.OID_FAIL_INFO)]
    status, fail_info = (
        None if value is None else cms.parsed_value(value, core.PrintableString) for value in found
    )
    return status, fail_info


def raw_csr(key: rsa.RSAPrivateKey, spki: bytes, attributes: Sequence[bytes]) -> bytes:
    """A CSR written byte by byte: any public key info, the attributes in the order given
    (not DER's), signed with `key`."""
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": asn1_x509.Name.build({"common_name": unique("raw")}),
            "subject_pk_info": asn1_keys.PublicKeyInfo.load(spki),
            "attributes": asn1_csr.CRIAttributes(contents=b"".join(attributes), implicit=0),
        }
    )
    signature = key.sign(info.dump(), padding.PKCS1v15(), hashes.SHA256())
    return asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": "sha256_rsa"},
            "signature": signature,
        }
    ).dump()


def raw_attribute(oid: str, values: Sequence[core.Asn1Value]) -> bytes:
    encoded = core.SetOf(contents=b"".join(v.dump() for v in values)).dump()
    return core.Sequence(contents=core.ObjectIdentifier(oid).dump() + encoded).dump()


# --- a renewal renews the signer's own certificate, from this profile's CA ---------------


def test_renewal_keeps_the_signers_subject_and_names(scep: Scep, api: httpx.Client) -> None:
    """A RenewalReq is signed with the certificate it renews: the new certificate has the
    same subject and names. Neither a new subject nor an added or dropped name, even on a
    profile that approves nothing by itself."""
    device = new_client()
    cn = unique("device-a")
    names = [f"{cn}.corp.example", f"alt.{cn}.corp.example"]
    _, enrolled = scep.enroll(device, named_csr(device.key, cn, names, scep.challenge))
    assert enrolled.status == SUCCESS, enrolled
    holder = Client(device.key, enrolled.certificates[0])
    queued = profile(api, scep, auto_approve=False)
    _, queued_ra = split(ca_certificates(scep.http, queued))
    admin = unique("admin")
    for subject, dns in [
        (admin, [f"{admin}.corp.example", "*.corp.example"]),  # someone else entirely
        (cn, [*names, "*.corp.example"]),  # a name added
        (cn, names[:1]),  # a name dropped
        (f"{cn}-2", names),  # another subject
    ]:
        sent = pki_message(holder, queued_ra, named_csr(device.key, subject, dns), RENEWAL_REQ)
        reply = read_reply(scep.post(sent, queued), holder, queued_ra)
        assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST), (subject, dns)
    assert issued_named(api, admin) == []
    assert len(issued_named(api, cn)) == 1
    # The same subject and names, in another order, with a new key: renewed.
    fresh = new_client()
    csr = named_csr(fresh.key, cn, list(reversed(names)))
    sent = pki_message(holder, scep.ra, csr, RENEWAL_REQ)
    renewed = read_reply(scep.post(sent), holder, scep.ra)
    assert renewed.status == SUCCESS, renewed
    (cert,) = renewed.certificates
    assert cert.subject == holder.cert.subject and cert.issuer == scep.ca.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(names)


def test_renewal_only_of_a_certificate_of_this_profiles_ca(scep: Scep, api: httpx.Client) -> None:
    """A certificate of another CA of the organization does not renew here; during a
    rollover, one of the next CA (announced by GetNextCACert) does, from the current CA."""
    other_ca = rsa_ca(api, unique("SCEP Root B"))
    cn = unique("from-root-b")
    foreign = issued_by_api(api, other_ca, new_client(), cn)
    csr = csr_der(foreign, cn, None)
    _, refused = scep.enroll(foreign, csr, kind=RENEWAL_REQ)
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_CERT_ID)
    assert len(issued_named(api, cn)) == 1  # only the API's own
    rollover = profile(api, scep, next_ca_id=other_ca, auto_approve=True)
    _, ra = split(ca_certificates(scep.http, rollover))
    sent = pki_message(foreign, ra, csr, RENEWAL_REQ)
    renewed = read_reply(scep.post(sent, rollover), foreign, ra)
    assert renewed.status == SUCCESS, renewed
    assert renewed.certificates[0].issuer == scep.ca.subject  # issued by the current CA


def test_a_renewal_by_an_api_certificate_of_the_same_ca(scep: Scep, api: httpx.Client) -> None:
    """What matters is the issuing CA, not the front end that issued it."""
    cn = unique("api-issued")
    holder = issued_by_api(api, scep.ca_id, new_client(), cn)
    _, renewed = scep.enroll(holder, csr_der(holder, cn, None), kind=RENEWAL_REQ)
    assert renewed.status == SUCCESS, renewed


# --- an answer we cannot encrypt is refused before anything is written -------------------


def test_a_signer_without_an_rsa_key_is_refused_first(scep: Scep, api: httpx.Client) -> None:
    """The CertRep is encrypted to the signer's RSA key, or for a key that cannot encrypt
    (EC) with a challenge password (RFC 8894 3.1, tests/e2e/test_scep_pwri*.py): on a
    dynamic profile the one-time password the request proves. A request that would be
    queued without one could never be answered: an EC signer gets FAILURE badAlg with no
    request queued and the dynamic challenge of the profile still usable."""
    ca_id = rsa_ca(api, unique("SCEP EC Signer Root"))
    dynamic = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", auto_approve=True)
    _, dynamic_ra = split(ca_certificates(scep.http, dynamic))
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    settings = {"auto_approve": False, "queue_without_challenge": True}
    open_queue = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", **settings)
    _, open_ra = split(ca_certificates(scep.http, open_queue))
    before = scep_requests(api)
    cn = unique("ec-signer")
    key, cert = ec_client(cn)
    for password in (None, "not-" + challenge):
        sent = ec_signed(key, cert, open_ra, named_csr(key, cn, challenge=password))
        response = scep.post(sent, open_queue)
        assert response.status_code == 200, response.text
        assert status_of(response) == (FAILURE, BAD_ALG), password
    assert issued_named(api, cn) == []
    assert scep_requests(api) == before
    rsa_device = new_client()
    sent = pki_message(rsa_device, dynamic_ra, csr_der(rsa_device, unique("after-ec"), challenge))
    assert read_reply(scep.post(sent, dynamic), rsa_device, dynamic_ra).status == SUCCESS


# --- the challengePassword is text, whatever string type carries it -----------------------


@pytest.mark.parametrize(
    "string_type",
    [core.BMPString, core.UniversalString, core.TeletexString, core.UTF8String],
    ids=lambda t: t.__name__,
)
def test_a_challenge_in_any_directory_string_type(
    scep: Scep, api: httpx.Client, string_type: type[core.AbstractString]
) -> None:
    """RFC 2985 makes the challengePassword a DirectoryString: a BMPString (UTF-16) or a
    UniversalString (UTF-32) holding the password is the password, as a UTF8String is, and
    a wrong one in any of them is still wrong."""
    client = new_client()
    spki = client.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wrong = raw_attribute(CHALLENGE_PASSWORD, [string_type("not-" + scep.challenge)])
    _, refused = scep.enroll(client, raw_csr(client.key, spki, [wrong]))
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)
    right = raw_attribute(CHALLENGE_PASSWORD, [string_type(scep.challenge)])
    _, reply = scep.enroll(client, raw_csr(client.key, spki, [right]))
    assert reply.status == SUCCESS, reply


def test_a_dynamic_challenge_is_one_password_in_any_string_type(
    scep: Scep, api: httpx.Client
) -> None:
    """A dynamic challenge spent as a BMPString is spent as a UTF8String too: it is the same
    password."""
    ca_id = rsa_ca(api, unique("SCEP BMP Root"))
    path = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", auto_approve=True)
    _, ra = split(ca_certificates(scep.http, path))
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    replies = []
    for string_type in (core.BMPString, core.UTF8String):
        client = new_client()
        spki = client.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        password = raw_attribute(CHALLENGE_PASSWORD, [string_type(challenge)])
        sent = pki_message(client, ra, raw_csr(client.key, spki, [password]))
        replies.append(read_reply(scep.post(sent, path), client, ra))
    assert replies[0].status == SUCCESS, replies[0]
    assert (replies[1].status, replies[1].fail_info) == (FAILURE, BAD_REQUEST)


# --- malformed input that cryptography refuses in its own ways ---------------------------


def test_a_csr_with_an_unknown_key_algorithm_is_a_failure(scep: Scep, api: httpx.Client) -> None:
    """Attributes out of DER order (as strongSwan writes them) take the lenient reader, which
    must still refuse an unknown key algorithm as badRequest. So must a challengePassword
    with two values, which cryptography reads only when asked."""
    client = new_client()
    algorithm = core.Sequence(contents=core.ObjectIdentifier("1.2.3.4.5").dump()).dump()
    unknown_key = core.Sequence(contents=algorithm + core.BitString((1, 0) * 64).dump()).dump()
    rsa_key = client.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    password = raw_attribute(CHALLENGE_PASSWORD, [core.UTF8String(scep.challenge * 3)])
    sans = x509.SubjectAlternativeName([x509.DNSName("raw.example")])
    extensions = raw_attribute(
        "1.2.840.113549.1.9.14",
        [core.SequenceOf(contents=_extension(sans))],
    )
    assert password > extensions  # the challenge first is not DER order
    two_values = raw_attribute(
        CHALLENGE_PASSWORD, [core.UTF8String("a"), core.UTF8String(scep.challenge)]
    )
    before = scep_requests(api)
    for csr in [
        raw_csr(client.key, unknown_key, [password, extensions]),
        raw_csr(client.key, rsa_key, [two_values]),
    ]:
        sent = pki_message(client, scep.ra, csr)
        response = scep.post(sent)
        assert response.status_code == 200, response.text
        reply = read_reply(response, client, scep.ra)
        assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep_requests(api) == before


def _extension(extension: x509.ExtensionType) -> bytes:
    return asn1_x509.Extension(
        {
            "extn_id": extension.oid.dotted_string,
            "critical": False,
            "extn_value": core.ParsableOctetString(extension.public_bytes()),
        }
    ).dump()


def test_a_signer_certificate_of_an_unknown_version_is_400(scep: Scep) -> None:
    """cryptography raises its own InvalidVersion for such a certificate; it is no
    pkiMessage we can read, so a 400 like any other unreadable PKCS#7."""
    client = new_client()
    sent = pki_message(client, scep.ra, csr_der(client, unique("v9"), scep.challenge))
    cert = client.cert.public_bytes(serialization.Encoding.DER)
    version = bytes.fromhex("a003020102")  # [0] INTEGER 2 (v3)
    assert sent.der.count(version) == 1 and cert.count(version) == 1
    bad = sent.der.replace(version, bytes.fromhex("a003020109"))
    response = scep.post(Sent(bad, sent.transaction_id, sent.nonce))
    assert response.status_code == 400, response.text


# --- polls and re-sent requests reach only the requester's own transaction ---------------


def test_a_reused_transaction_id_takes_nobody_elses_outcome(scep: Scep, api: httpx.Client) -> None:
    path = profile(api, scep, auto_approve=False, queue_without_challenge=True)
    _, ra = split(ca_certificates(scep.http, path))
    victim, attacker = new_client(), new_client()
    cn = unique("victim")
    sent = pki_message(victim, ra, csr_der(victim, cn, scep.challenge))
    assert read_reply(scep.post(sent, path), victim, ra).status == PENDING
    txid = sent.transaction_id
    # Another key under the same transactionID, even with the same subject: refused.
    for subject in (cn, unique("attacker")):
        hijack = pki_message(attacker, ra, csr_der(attacker, subject, None), transaction_id=txid)
        reply = read_reply(scep.post(hijack, path), attacker, ra)
        assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST)
    mine = transaction_rows(api, txid)
    assert [r["common_name"] for r in mine] == [cn]
    # The same key may start a second request under it, for another subject.
    second_cn = unique("victim-second")
    second = pki_message(
        victim, ra, csr_der(victim, second_cn, scep.challenge), transaction_id=txid
    )
    assert read_reply(scep.post(second, path), victim, ra).status == PENDING
    rows = {r["common_name"]: r for r in transaction_rows(api, txid)}
    assert set(rows) == {cn, second_cn}
    data(api.post(f"{API}/scep/{rows[cn]['id']}/approve"))
    data(api.post(f"{API}/scep/{rows[second_cn]['id']}/reject", json={"reason": "no"}))

    def poll(client: Client, subject: str) -> Any:
        payload = issuer_and_subject(scep.ca.subject, subject)
        sent = pki_message(client, ra, payload, kind=CERT_POLL, transaction_id=txid)
        return read_reply(scep.post(sent, path), client, ra)

    polled = poll(victim, cn)
    assert polled.status == SUCCESS and polled.certificates[0].subject.rfc4514_string() == (
        f"CN={cn}"
    )
    assert (poll(victim, second_cn).status, poll(victim, second_cn).fail_info) == (
        FAILURE,
        BAD_REQUEST,
    )
    unknown = poll(victim, unique("nobody"))
    assert (unknown.status, unknown.fail_info) == (FAILURE, BAD_CERT_ID)
    # Re-sending the PKCSReq (how scepclient polls) gets the same certificate, no new row.
    again = pki_message(victim, ra, csr_der(victim, cn, scep.challenge), transaction_id=txid)
    resent = read_reply(scep.post(again, path), victim, ra)
    assert resent.status == SUCCESS
    assert resent.certificates[0].serial_number == polled.certificates[0].serial_number
    assert len(transaction_rows(api, txid)) == 2


def test_a_poll_finds_the_request_of_its_signers_key(scep: Scep, api: httpx.Client) -> None:
    """RFC 8894 section 3.3.3: polling is controlled by the transactionID and who sends it,
    not by the messageData. Another key naming the transactionID and the subject learns
    nothing (badCertId, as for an unknown transaction); the requester is answered whatever
    subject its poll names, and with any certificate for its key."""
    path = profile(api, scep, auto_approve=False)
    _, ra = split(ca_certificates(scep.http, path))
    device, cn = new_client("device"), unique("polled")
    sent = pki_message(device, ra, csr_der(device, cn, scep.challenge))
    assert read_reply(scep.post(sent, path), device, ra).status == PENDING
    txid = sent.transaction_id

    def poll(client: Client, subject: str) -> Any:
        payload = issuer_and_subject(scep.ca.subject, subject)
        polled = pki_message(client, ra, payload, kind=CERT_POLL, transaction_id=txid)
        return read_reply(scep.post(polled, path), client, ra)

    stranger = new_client()
    for answer in (poll(stranger, cn), poll(stranger, "device")):
        assert (answer.status, answer.fail_info) == (FAILURE, BAD_CERT_ID)
    same_key = Client(device.key, self_signed(device.key, "renamed"))
    for client, subject in [(device, cn), (device, "device"), (same_key, cn)]:
        assert poll(client, subject).status == PENDING, subject
    (row,) = transaction_rows(api, txid)
    data(api.post(f"{API}/scep/{row['id']}/approve"))
    refused = poll(stranger, cn)
    assert (refused.status, refused.fail_info, refused.certificates) == (FAILURE, BAD_CERT_ID, [])
    issued = poll(device, "device")
    assert issued.status == SUCCESS and issued.certificates[0].subject.rfc4514_string() == (
        f"CN={cn}"
    )


def transaction_rows(api: httpx.Client, transaction_id: str) -> list[dict[str, Any]]:
    rows = data(api.get(f"{API}/scep/requests", params={"per_page": 100}))
    return [r for r in rows if r["transaction_id"] == transaction_id]


def test_a_pkcsreq_sent_again_never_undoes_a_revocation(scep: Scep, api: httpx.Client) -> None:
    """Clients derive the transactionID from their key (scepclient does), so a device sends
    the very PKCSReq again to enroll anew. Its certificate revoked (on hold too): FAILURE,
    never the revoked one as SUCCESS nor a new one that would undo the revocation; a key
    revoked as compromised is not certified under any transactionID."""
    for reason in ("certificateHold", "keyCompromise"):
        device = new_client()
        cn = unique(f"revoked-{reason}")
        first, issued = scep.enroll(device, csr_der(device, cn, scep.challenge))
        assert issued.status == SUCCESS, issued
        (row,) = issued_named(api, cn)
        data(api.post(f"{API}/certificates/{row['id']}/revoke", json={"reason": reason}))
        txid = first.transaction_id
        _, again = scep.enroll(device, csr_der(device, cn, scep.challenge), transaction_id=txid)
        assert (again.status, again.fail_info) == (FAILURE, BAD_REQUEST), (reason, again)
        subject = issuer_and_subject(scep.ca.subject, cn)
        poll = pki_message(device, scep.ra, subject, kind=CERT_POLL, transaction_id=txid)
        assert read_reply(scep.post(poll), device, scep.ra).status == FAILURE
        assert len(issued_named(api, cn)) == 1  # nothing issued again
    _, fresh = scep.enroll(device, csr_der(device, cn, scep.challenge))  # new transactionID
    assert (fresh.status, fresh.fail_info) == (FAILURE, BAD_REQUEST), fresh


def test_a_pkcsreq_sent_again_after_deletion_gets_a_new_certificate(
    scep: Scep, api: httpx.Client
) -> None:
    """A request whose certificate was deleted (or expired) is a finished transaction: the
    same PKCSReq sent again is a new enrollment, checked and issued like any other, and a
    poll of that transaction then finds the new certificate."""
    device = new_client()
    cn = unique("re-enrolled")
    first, issued = scep.enroll(device, csr_der(device, cn, scep.challenge))
    assert issued.status == SUCCESS, issued
    (old,) = issued.certificates
    (row,) = issued_named(api, cn)
    assert api.delete(f"{API}/certificates/{row['id']}").status_code == 204
    txid = first.transaction_id
    _, refused = scep.enroll(device, csr_der(device, cn, "wrong"), transaction_id=txid)
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)
    _, again = scep.enroll(device, csr_der(device, cn, scep.challenge), transaction_id=txid)
    assert again.status == SUCCESS, again
    assert again.certificates[0].serial_number != old.serial_number
    subject = issuer_and_subject(scep.ca.subject, cn)
    poll = pki_message(device, scep.ra, subject, kind=CERT_POLL, transaction_id=txid)
    assert read_reply(scep.post(poll), device, scep.ra).certificates == again.certificates


# --- a request sent again after its request was rejected, or queued without a challenge --


def resend(
    scep: Scep, path: str, ra: x509.Certificate, client: Client, cn: str, txid: str
) -> Callable[[str | None], Any]:
    """Sends `client`'s PKCSReq for `cn` under `txid`, with the challenge it is given."""

    def send(challenge: str | None) -> Any:
        sent = pki_message(client, ra, csr_der(client, cn, challenge), transaction_id=txid)
        return read_reply(scep.post(sent, path), client, ra)

    return send


def test_a_rejected_request_sent_again_with_a_valid_challenge_is_issued(
    scep: Scep, api: httpx.Client
) -> None:
    """Queued without a challenge and rejected: sent again without one it keeps getting the
    rejection; sent again with the right challenge (not the one rejected) it is a new
    request, issued at once by an auto-approving profile. Before, the key and subject got
    FAILURE under their transactionID forever."""
    path = profile(api, scep, auto_approve=True, queue_without_challenge=True)
    _, ra = split(ca_certificates(scep.http, path))
    device, cn, txid = new_client(), unique("rejected-then-valid"), uuid.uuid4().hex
    send = resend(scep, path, ra, device, cn, txid)
    assert send(None).status == PENDING
    (row,) = transaction_rows(api, txid)
    data(api.post(f"{API}/scep/{row['id']}/reject", json={"reason": "who are you?"}))
    for challenge in (None, "wrong", None):
        refused = send(challenge)
        assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST), challenge
    issued = send(scep.challenge)
    assert issued.status == SUCCESS, issued
    assert [r["status"] for r in transaction_rows(api, txid)] == ["issued", "rejected"]
    again = send(scep.challenge)  # a retry: the same certificate, not a second one
    assert again.certificates == issued.certificates
    assert len(issued_named(api, cn)) == 1


@pytest.mark.parametrize("auto_approve", [True, False])
def test_a_valid_challenge_supersedes_a_request_queued_without_one(
    scep: Scep, api: httpx.Client, auto_approve: bool
) -> None:
    """With queue_without_challenge, a request queued without a valid challenge and sent
    again with one is a proper request: issued at once when the profile approves by itself,
    else queued. The stale request is rejected as superseded, so that no approval issues it
    as a second certificate."""
    path = profile(api, scep, auto_approve=auto_approve, queue_without_challenge=True)
    _, ra = split(ca_certificates(scep.http, path))
    device, cn, txid = new_client(), unique("superseded"), uuid.uuid4().hex
    send = resend(scep, path, ra, device, cn, txid)
    assert send(None).status == PENDING
    assert send("wrong").status == PENDING  # still that request: no valid challenge
    (stale,) = transaction_rows(api, txid)
    reply = send(scep.challenge)
    assert reply.status == (SUCCESS if auto_approve else PENDING), reply
    rows = transaction_rows(api, txid)
    assert [r["status"] for r in rows] == ["issued" if auto_approve else "pending", "rejected"]
    assert rows[1]["id"] == stale["id"] and "superseded" in rows[1]["reason"]
    assert api.post(f"{API}/scep/{stale['id']}/approve").status_code == 409
    if not auto_approve:
        data(api.post(f"{API}/scep/{rows[0]['id']}/approve"))
    poll = pki_message(
        device, ra, issuer_and_subject(scep.ca.subject, cn), CERT_POLL, transaction_id=txid
    )
    polled = read_reply(scep.post(poll, path), device, ra)
    assert polled.status == SUCCESS, polled
    assert send(scep.challenge).certificates == polled.certificates
    assert len(issued_named(api, cn)) == 1


def test_a_finished_transaction_may_be_taken_by_a_new_key(scep: Scep, api: httpx.Client) -> None:
    """RFC 8894 section 3.2.1.1 lets the CA assign the transactionID (a device's EUI): such
    a device re-keys under it. Another key is refused only while a request under it is open
    (pending, or issued and still current), not once its certificate was deleted or its
    request rejected."""
    eui = f"EUI-{uuid.uuid4().hex[:16]}"
    first, cn = new_client(), unique("eui-device")
    _, issued = scep.enroll(first, csr_der(first, cn, scep.challenge), transaction_id=eui)
    assert issued.status == SUCCESS, issued
    rekeyed = new_client()
    _, refused = scep.enroll(rekeyed, csr_der(rekeyed, cn, scep.challenge), transaction_id=eui)
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)
    (row,) = issued_named(api, cn)
    assert api.delete(f"{API}/certificates/{row['id']}").status_code == 204
    _, renewed = scep.enroll(rekeyed, csr_der(rekeyed, cn, scep.challenge), transaction_id=eui)
    assert renewed.status == SUCCESS, renewed
    # The key that took it over does not shut the first one out: a transactionID derived
    # from a public key is known to whoever sees its certificate.
    _, back = scep.enroll(first, csr_der(first, cn, scep.challenge), transaction_id=eui)
    assert back.status == SUCCESS, back
    # and after a rejection
    path = profile(api, scep, auto_approve=False)
    _, ra = split(ca_certificates(scep.http, path))
    eui = f"EUI-{uuid.uuid4().hex[:16]}"
    assert resend(scep, path, ra, first, cn, eui)(scep.challenge).status == PENDING
    (row,) = transaction_rows(api, eui)
    data(api.post(f"{API}/scep/{row['id']}/reject", json={"reason": "no"}))
    assert resend(scep, path, ra, rekeyed, cn, eui)(scep.challenge).status == PENDING
    assert [r["status"] for r in transaction_rows(api, eui)] == ["pending", "rejected"]


def test_a_key_queued_under_another_transaction_id_is_queued_once(
    scep: Scep, api: httpx.Client
) -> None:
    """A PKCSReq for a key and subject that a request under another transactionID still
    has queued: from that request's signer with a valid challenge it replaces it (rejected
    as superseded, as a request sent again does), so the queue holds one request and no
    approval issues a second certificate for the key; without a valid challenge, or signed
    by another key carrying the same CSR, it is refused (FAILURE badRequest), nothing
    written."""
    path = profile(api, scep, auto_approve=False, queue_without_challenge=True)
    _, ra = split(ca_certificates(scep.http, path))
    device, cn = new_client(), unique("queued-twice")
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert resend(scep, path, ra, device, cn, first)(scep.challenge).status == PENDING
    assert resend(scep, path, ra, device, cn, second)(scep.challenge).status == PENDING
    (stale,) = transaction_rows(api, first)
    assert stale["status"] == "rejected" and "superseded" in stale["reason"]
    (queued,) = transaction_rows(api, second)
    assert queued["status"] == "pending"
    before = scep_requests(api)
    refused = [resend(scep, path, ra, device, cn, uuid.uuid4().hex)(None)]
    stranger = new_client()
    payload = csr_der(device, cn, scep.challenge)  # the device's CSR, signed by another key
    sent = pki_message(stranger, ra, payload, transaction_id=uuid.uuid4().hex)
    refused.append(read_reply(scep.post(sent, path), stranger, ra))
    for reply in refused:
        assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST), reply
    assert scep_requests(api) == before
    assert transaction_rows(api, second)[0]["status"] == "pending"
    data(api.post(f"{API}/scep/{queued['id']}/approve"))
    poll = pki_message(
        device, ra, issuer_and_subject(scep.ca.subject, cn), CERT_POLL, transaction_id=second
    )
    assert read_reply(scep.post(poll, path), device, ra).status == SUCCESS
    assert api.post(f"{API}/scep/{stale['id']}/approve").status_code == 409
    assert len(issued_named(api, cn)) == 1


@pytest.mark.parametrize(
    "string_type", [core.BMPString, core.UTF8String, core.IA5String, core.UniversalString]
)
def test_an_undecodable_challenge_leaves_none_of_it_in_the_audit(
    scep: Scep, api: httpx.Client, string_type: type[core.AbstractString]
) -> None:
    """A challengePassword whose octets its string type cannot decode (the real password,
    say, in a BMPString cut short) is FAILURE badRequest; the refusal's audit row says so
    without the codec's own message, which names a byte of the password and where it is."""
    client = new_client()
    spki = client.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    octets = scep.challenge.encode() + b"\xe9"  # odd length, and not UTF-8 nor ASCII
    value = string_type(contents=octets)
    sent, refused = scep.enroll(
        client, raw_csr(client.key, spki, [raw_attribute(CHALLENGE_PASSWORD, [value])])
    )
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)
    rows = data(api.get(f"{API}/audit/logs", params={"search": sent.transaction_id}))
    (row,) = [r for r in rows if r["action"] == "scep.refuse"]
    text = json.dumps(row)
    assert "DirectoryString" in text
    for byte in set(octets):
        assert f"0x{byte:02x}" not in text, byte
