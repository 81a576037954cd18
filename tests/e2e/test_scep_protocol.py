"""SCEP at the protocol level: messages built in Python (asn1crypto + cryptography) against a
real `tessera serve`, for what the real clients never send: garbage, wrong recipients,
unsupported ciphers, bad signatures, missing, wrong and reused challenges, renewals signed by
revoked or foreign certificates. Plus the management API around it."""

import base64
import ipaddress
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.x509.oid import NameOID

from tessera.protocols.scep import cms, messages
from tests.e2e.helpers import (
    data,
    database_values,
    error,
    import_ca_file,
    self_signed,
    self_signed_ca,
    unique,
)
from tests.support import Server

API = "/api/v2"
PKCS_REQ, RENEWAL_REQ, CERT_POLL, GET_CERT, GET_CRL = "19", "17", "20", "21", "22"
SUCCESS, FAILURE, PENDING = "0", "2", "3"
BAD_ALG, BAD_MESSAGE_CHECK, BAD_REQUEST, BAD_CERT_ID = "0", "1", "2", "4"


# --- a small SCEP client ----------------------------------------------------------------


@dataclass
class Client:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate  # the signer: self-signed for PKCSReq, the old cert for renewal


def new_client(cn: str = "device", bits: int = 2048) -> Client:
    key = rsa.generate_private_key(65537, bits)
    return Client(key, self_signed(key, cn))


def csr_der(client: Client, cn: str, challenge: str | None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if challenge is not None:
        builder = builder.add_attribute(
            x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode()
        )
    csr = builder.sign(client.key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def attribute(oid: str, value: core.Asn1Value) -> asn1_cms.CMSAttribute:
    return asn1_cms.CMSAttribute({"type": oid, "values": [value]})


@dataclass
class Sent:
    der: bytes
    transaction_id: str
    nonce: bytes


def pki_message(
    client: Client,
    recipient: x509.Certificate,
    payload: bytes,
    kind: str = PKCS_REQ,
    cipher: str = "aes128_cbc",
    transaction_id: str | None = None,
    envelope: bytes | None = None,
) -> Sent:
    transaction = transaction_id or uuid.uuid4().hex
    nonce = os.urandom(16)
    enveloped = envelope or cms.encrypt_enveloped(payload, recipient, cipher)
    attrs = [
        attribute(messages.OID_MESSAGE_TYPE, core.PrintableString(kind)),
        attribute(messages.OID_TRANSACTION_ID, core.PrintableString(transaction)),
        attribute(messages.OID_SENDER_NONCE, core.OctetString(nonce)),
    ]
    der = cms.sign(enveloped, attrs, client.cert, client.key, "sha256", [client.cert])
    return Sent(der, transaction, nonce)


@dataclass
class Reply:
    status: str
    fail_info: str | None
    transaction_id: str
    recipient_nonce: bytes
    certificates: list[x509.Certificate]
    crls: int
    fail_text: str | None = None


def read_reply(response: httpx.Response, client: Client, ra: x509.Certificate) -> Reply:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-pki-message"
    signed = cms.load_signed(response.content)
    signer = cms.signer_certificate(signed)
    assert signer == ra
    cms.verify(signed, signer)  # raises when the server's signature does not verify

    def text(oid: str, spec: type[core.Asn1Value] = core.PrintableString) -> Any:
        value = signed.attribute(oid)
        return cms.parsed_value(value, spec) if value is not None else None

    certificates: list[x509.Certificate] = []
    crls = 0
    if text(messages.OID_PKI_STATUS) == SUCCESS:
        assert signed.content
        inner = cms.decrypt_enveloped(signed.content, client.cert, client.key).content
        degenerate = asn1_cms.ContentInfo.load(inner)["content"]
        certificates = [
            x509.load_der_x509_certificate(c.chosen.dump()) for c in degenerate["certificates"]
        ]
        crls = len(degenerate["crls"]) if degenerate["crls"] else 0
    return Reply(
        text(messages.OID_PKI_STATUS),
        text(messages.OID_FAIL_INFO),
        text(messages.OID_TRANSACTION_ID),
        text(messages.OID_RECIPIENT_NONCE, core.OctetString),
        certificates,
        crls,
        text(messages.OID_FAIL_INFO_TEXT, core.UTF8String),
    )


# --- fixtures -------------------------------------------------------------------------


@dataclass
class Scep:
    http: httpx.Client
    ca_id: int
    ca: x509.Certificate
    ra: x509.Certificate
    challenge: str
    path: str = "/scep/pkiclient.exe"

    def post(self, sent: Sent, path: str | None = None) -> httpx.Response:
        return self.http.post(
            f"{path or self.path}?operation=PKIOperation",
            content=sent.der,
            headers={"content-type": "application/x-pki-message"},
        )

    def enroll(self, client: Client, payload: bytes, **kwargs: Any) -> tuple[Sent, Reply]:
        sent = pki_message(client, self.ra, payload, **kwargs)
        return sent, read_reply(self.post(sent), client, self.ra)


def ca_certificates(http: httpx.Client, path: str) -> list[x509.Certificate]:
    response = http.get(f"{path}?operation=GetCACert")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-x509-ca-ra-cert"
    signed = asn1_cms.ContentInfo.load(response.content)["content"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]


def split(certs: list[x509.Certificate]) -> tuple[x509.Certificate, x509.Certificate]:
    def is_ca(cert: x509.Certificate) -> bool:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

    return next(c for c in certs if is_ca(c)), next(c for c in certs if not is_ca(c))


def rsa_ca(api: httpx.Client, name: str) -> int:
    body = {"common_name": name, "key_algorithm": "RSA", "key_size": 2048, "ca_type": "root"}
    return int(data(api.post(f"{API}/cas", json=body), 201)["id"])


@contextmanager
def default_profile(server: Server, root_name: str) -> Iterator[Scep]:
    """The default profile on a new RSA root, auto-approving, with a static challenge."""
    with server.client() as api, httpx.Client(base_url=server.http_url, timeout=60) as http:
        ca_id = rsa_ca(api, unique(root_name))
        body = {"enabled": True, "ca_id": ca_id, "auto_approve": True}
        data(api.patch(f"{API}/scep/config", json=body))
        challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
        ca, ra = split(ca_certificates(http, "/scep/pkiclient.exe"))
        yield Scep(http, ca_id, ca, ra, challenge)


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP Protocol Root") as made:
        yield made


def profile(api: httpx.Client, scep: Scep, **settings: Any) -> str:
    slug = unique("p").lower()
    body = {"slug": slug, "enabled": True, "ca_id": scep.ca_id, **settings}
    data(api.post(f"{API}/scep/profiles", json=body), 201)
    return f"/scep/{slug}/pkiclient.exe"


def scep_requests(api: httpx.Client) -> int:
    return int(data(api.get(f"{API}/scep/stats"))["total"])


def issued_named(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = data(api.get(f"{API}/certificates", params={"search": name}))
    return found


def issuer_and_subject(issuer: x509.Name, subject_cn: str) -> bytes:
    subject = asn1_cms.Name.build({"common_name": subject_cn})
    return messages._IssuerAndSubject(
        {"issuer": asn1_cms.Name.load(issuer.public_bytes()), "subject": subject}
    ).dump()


# --- the happy path, checked field by field -------------------------------------------


def test_enrollment_echoes_transaction_and_nonce(scep: Scep, api: httpx.Client) -> None:
    client = new_client()
    sent, reply = scep.enroll(client, csr_der(client, "py-device-1", scep.challenge))
    assert reply.status == SUCCESS, reply
    assert reply.transaction_id == sent.transaction_id
    assert reply.recipient_nonce == sent.nonce
    (cert,) = reply.certificates
    assert cert.subject.rfc4514_string() == "CN=py-device-1"
    assert cert.issuer == scep.ca.subject
    listed = data(api.get(f"{API}/certificates", params={"search": "py-device-1"}))
    assert [c["source"] for c in listed] == ["scep"]


def audit_events(api: httpx.Client, search: str) -> dict[str, list[dict[str, Any]]]:
    rows = data(api.get(f"{API}/audit/logs", params={"search": search, "per_page": 100}))
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["action"], []).append(row)
    return found


def test_an_enrollment_records_each_fact_once(scep: Scep, api: httpx.Client) -> None:
    """An enrollment writes the issuance's certificate.issue (what was signed) and one
    scep.request (the SCEP transaction: its ID, type, how it was authenticated), which names
    the certificate it got, as scep.approve does for a queued one; a renewal's names the
    certificate that signed it."""
    client, cn = new_client(), unique("audited-enrollment")
    sent, reply = scep.enroll(client, csr_der(client, cn, scep.challenge))
    assert reply.status == SUCCESS, reply
    (cert,) = issued_named(api, cn)
    events = audit_events(api, cn)
    assert sorted(events) == ["certificate.issue", "scep.request"]
    (issue,), (request,) = events["certificate.issue"], events["scep.request"]
    assert issue["resource_id"] == str(cert["id"])
    assert request["details_data"] == {
        "transaction_id": sent.transaction_id,
        "subject": f"CN={cn}",
        "type": "PKCSReq",
        "challenge": "valid",
        "certificate_id": cert["id"],
    }
    assert request["request_id"] == issue["request_id"]

    holder = Client(client.key, reply.certificates[0])
    renewal, renewed = scep.enroll(holder, csr_der(holder, cn, None), kind=RENEWAL_REQ)
    assert renewed.status == SUCCESS, renewed
    (new,) = [c for c in issued_named(api, cn) if c["id"] != cert["id"]]
    (request,) = [
        r
        for r in audit_events(api, renewal.transaction_id)["scep.request"]
        if r["details_data"]["transaction_id"] == renewal.transaction_id
    ]
    assert request["details_data"]["certificate_id"] == new["id"]
    assert request["details_data"]["renews"] == cert["id"]


def test_a_cn_only_csr_gets_its_host_cn_as_san(scep: Scep, api: httpx.Client) -> None:
    """As through the API: clients ignore the CN, so a CSR without a SAN extension whose
    CN names a host (or an address) gets it as a SAN; a person's name, or a single label
    (how devices are often named), gets none."""
    host = f"{unique('scep-cn')}.example.test"
    for cn, expected in [
        (host, [x509.DNSName(host)]),
        ("192.0.2.77", [x509.IPAddress(ipaddress.ip_address("192.0.2.77"))]),
    ]:
        client = new_client()
        _, reply = scep.enroll(client, csr_der(client, cn, scep.challenge))
        assert reply.status == SUCCESS, reply
        (cert,) = reply.certificates
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(sans) == expected
    assert [c["san"] for c in issued_named(api, host)] == [[f"dns:{host}"]]
    for cn in ("Alice Example", "device-42"):
        person = new_client()
        _, reply = scep.enroll(person, csr_der(person, cn, scep.challenge))
        assert reply.status == SUCCESS, reply
        with pytest.raises(x509.ExtensionNotFound):
            reply.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize("cipher", ["aes128_cbc", "aes256_cbc", "tripledes_3key"])
def test_each_accepted_cipher(scep: Scep, cipher: str) -> None:
    client = new_client()
    _, reply = scep.enroll(client, csr_der(client, f"c-{cipher}", scep.challenge), cipher=cipher)
    assert reply.status == SUCCESS, reply


def single_des_envelope(payload: bytes, recipient: x509.Certificate) -> bytes:
    """An EnvelopedData as micromdm's scepclient sends it: DES-CBC content, RSA key transport
    (Tessera's own `encrypt_enveloped` never writes single DES)."""
    key, iv = os.urandom(8), os.urandom(8)
    padder = sym_padding.PKCS7(64).padder()
    encryptor = Cipher(TripleDES(key * 3), modes.CBC(iv)).encryptor()  # one key thrice: DES
    ciphertext = encryptor.update(padder.update(payload) + padder.finalize())
    ciphertext += encryptor.finalize()
    info = asn1_cms.ContentInfo.load(cms.encrypt_enveloped(payload, recipient, "aes128_cbc"))
    enveloped = info["content"]
    public_key = recipient.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    enveloped["recipient_infos"][0].chosen["encrypted_key"] = public_key.encrypt(
        key, asym_padding.PKCS1v15()
    )
    content = enveloped["encrypted_content_info"]
    content["content_encryption_algorithm"] = algos.EncryptionAlgorithm(
        {"algorithm": "des", "parameters": core.OctetString(iv)}
    )
    content["encrypted_content"] = ciphertext
    return info.dump(force=True)


def test_single_des_is_refused_by_default(scep: Scep, api: httpx.Client) -> None:
    """RFC 8894 2.9: no single DES (an on-path attacker can strip AES from the unsigned
    GetCACaps and read the challenge password). TESSERA_SCEP_ALLOW_DES lets old clients in
    (tests/e2e/test_scep_clients.py, micromdm's scepclient)."""
    client = new_client()
    envelope = single_des_envelope(csr_der(client, "single-des", scep.challenge), scep.ra)
    sent = pki_message(client, scep.ra, b"", envelope=envelope)
    reply = read_reply(scep.post(sent), client, scep.ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_ALG)
    assert reply.fail_text and "TESSERA_SCEP_ALLOW_DES" in reply.fail_text  # the way out
    assert issued_named(api, "single-des") == []


def test_get_pki_operation_and_alias(scep: Scep) -> None:
    client = new_client()
    sent = pki_message(client, scep.ra, csr_der(client, "get-op", scep.challenge))
    message = base64.b64encode(sent.der).decode()
    response = scep.http.get(
        "/cgi-bin/pkiclient.exe", params={"operation": "PKIOperation", "message": message}
    )
    assert read_reply(response, client, scep.ra).status == SUCCESS


def test_get_pki_operation_in_the_encodings_clients_send(scep: Scep) -> None:
    """The GET form's `message` as clients write it: '+' left unescaped (macOS, jScep; read
    back as a space), padding dropped, lines broken as OpenSSL's base64 breaks them (sscep),
    and the URL-safe alphabet (micromdm's scepclient encodes GET messages with it). A
    message that is no base64 in any of these is a 400 saying so."""
    quote = urllib.parse.quote

    def encoded(der: bytes) -> dict[str, str]:
        standard = base64.b64encode(der).decode()
        lines = "\n".join(standard[i : i + 64] for i in range(0, len(standard), 64))
        return {
            "unescaped plus": standard.replace("=", "%3D"),
            "no padding": quote(standard.rstrip("="), safe=""),
            "broken lines": quote(lines, safe=""),
            "url-safe": base64.urlsafe_b64encode(der).decode(),
        }

    for form in encoded(b""):
        client = new_client()
        sent = pki_message(client, scep.ra, csr_der(client, unique("get-form"), scep.challenge))
        message = encoded(sent.der)[form]
        response = scep.http.get(f"{scep.path}?operation=PKIOperation&message={message}")
        assert read_reply(response, client, scep.ra).status == SUCCESS, form
    for bad in ("%25%25%25", quote("A-+B", safe=""), "AB*D"):
        response = scep.http.get(f"{scep.path}?operation=PKIOperation&message={bad}")
        assert response.status_code == 400 and "not base64" in response.text, bad


def test_get_cert_and_get_crl(scep: Scep) -> None:
    client = new_client()
    _, reply = scep.enroll(client, csr_der(client, "getcert", scep.challenge))
    (issued,) = reply.certificates
    wanted = asn1_cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_cms.Name.load(issued.issuer.public_bytes()),
            "serial_number": issued.serial_number,
        }
    ).dump()
    _, got = scep.enroll(client, wanted, kind=GET_CERT)
    assert got.status == SUCCESS and got.certificates == [issued]
    _, crl = scep.enroll(client, wanted, kind=GET_CRL)
    # A CRL once the CRL publisher has stored one; until then a clear FAILURE.
    assert (crl.status, crl.crls) == (SUCCESS, 1) or (crl.status, crl.fail_info) == (
        FAILURE,
        BAD_CERT_ID,
    )
    unknown = asn1_cms.IssuerAndSerialNumber(
        {"issuer": asn1_cms.Name.load(issued.issuer.public_bytes()), "serial_number": 12345}
    ).dump()
    _, missing = scep.enroll(client, unknown, kind=GET_CERT)
    assert (missing.status, missing.fail_info) == (FAILURE, BAD_CERT_ID)


def test_get_crl_is_the_crl_of_the_issuer_named(scep: Scep, api: httpx.Client) -> None:
    """GetCRL names the issuer of the certificate whose status is asked (RFC 8894 3.3.4):
    the answer is that CA's newest full CRL, listing the revoked certificate and signed by
    it; another CA of the organization, even with CRLs of its own, is not this profile's
    (badCertId)."""
    client, cn = new_client(), unique("crl-listed")
    _, reply = scep.enroll(client, csr_der(client, cn, scep.challenge))
    (issued,) = reply.certificates
    (row,) = issued_named(api, cn)
    data(api.post(f"{API}/certificates/{row['id']}/revoke", json={"reason": "superseded"}))
    data(api.post(f"{API}/crl/{scep.ca_id}/regenerate"))
    other_id = rsa_ca(api, unique("SCEP Other CRL Root"))
    data(api.post(f"{API}/crl/{other_id}/regenerate"))
    other = x509.load_pem_x509_certificate(data(api.get(f"{API}/cas/{other_id}"))["pem"].encode())

    def get_crl(issuer: x509.Name, serial: int) -> httpx.Response:
        wanted = asn1_cms.IssuerAndSerialNumber(
            {"issuer": asn1_cms.Name.load(issuer.public_bytes()), "serial_number": serial}
        ).dump()
        return scep.post(pki_message(client, scep.ra, wanted, kind=GET_CRL))

    response = get_crl(issuer=issued.issuer, serial=issued.serial_number)
    assert read_reply(response, client, scep.ra).crls == 1
    signed = cms.load_signed(response.content)
    assert signed.content
    inner = cms.decrypt_enveloped(signed.content, client.cert, client.key).content
    (crl_choice,) = asn1_cms.ContentInfo.load(inner)["content"]["crls"]
    crl = x509.load_der_x509_crl(crl_choice.chosen.dump())
    assert crl.issuer == scep.ca.subject and crl.is_signature_valid(scep.ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(issued.serial_number) is not None
    refused = read_reply(get_crl(issuer=other.subject, serial=1), client, scep.ra)
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_CERT_ID)


# --- bad input: not SCEP at all is a 400 ------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x30\x82\xff\xff\x06", os.urandom(300)],
    ids=["empty", "text", "truncated-header", "random"],
)
def test_garbage_is_400(scep: Scep, body: bytes) -> None:
    response = scep.http.post("/scep/pkiclient.exe?operation=PKIOperation", content=body)
    assert response.status_code == 400, response.text
    assert "Traceback" not in response.text


def test_truncated_pkcs7_is_400(scep: Scep) -> None:
    client = new_client()
    sent = pki_message(client, scep.ra, csr_der(client, "trunc", scep.challenge))
    for cut in (len(sent.der) // 2, len(sent.der) - 1, 40):
        response = scep.post(Sent(sent.der[:cut], sent.transaction_id, sent.nonce))
        assert response.status_code == 400, (cut, response.text)


def test_flipped_bytes_never_500(scep: Scep) -> None:
    """Corrupt a valid request one byte at a time: a 400 or a CertRep, never a 500."""
    client = new_client()
    sent = pki_message(client, scep.ra, csr_der(client, "flip", scep.challenge))
    step = max(1, len(sent.der) // 60)
    for position in range(0, len(sent.der), step):
        corrupted = bytearray(sent.der)
        corrupted[position] ^= 0x5A
        response = scep.post(Sent(bytes(corrupted), sent.transaction_id, sent.nonce))
        assert response.status_code in (200, 400), (position, response.text)


def test_bad_requests_over_http(scep: Scep) -> None:
    assert scep.http.get("/scep/pkiclient.exe?operation=Nope").status_code == 400
    assert scep.http.get("/scep/pkiclient.exe").status_code == 400
    bad = scep.http.get("/scep/pkiclient.exe?operation=PKIOperation&message=%%%")
    assert bad.status_code == 400
    assert scep.http.post("/scep/pkiclient.exe?operation=GetCACert").status_code == 400
    assert scep.http.get("/scep/no-such/pkiclient.exe?operation=GetCACaps").status_code == 404
    next_ca = scep.http.get("/scep/pkiclient.exe?operation=GetNextCACert")
    assert next_ca.status_code == 404 and "rollover" in next_ca.text


def test_methods_sizes_and_nul_over_http(scep: Scep) -> None:
    put = scep.http.put("/scep/pkiclient.exe?operation=PKIOperation", content=b"x")
    assert put.status_code == 405 and put.headers["content-type"].startswith("text/plain")
    head = scep.http.head("/cgi-bin/pkiclient.exe?operation=GetCACaps")
    assert head.status_code == 200 and head.content == b""
    huge = scep.http.post(
        "/scep/pkiclient.exe?operation=PKIOperation", content=b"\x30" * (300 * 1024)
    )
    assert huge.status_code == 413 and "too large" in huge.text
    nul = scep.http.get("/scep/pkiclient.exe?operation=GetCACaps%00")
    assert nul.status_code == 400 and "NUL" in nul.text


def test_head_never_enrolls(scep: Scep, api: httpx.Client) -> None:
    """HEAD is safe and answers without a body: a PKIOperation sent by HEAD (a proxy or a
    link checker replaying a GET URL) is a 405, and issues nothing; the request it carries
    still enrolls by GET afterwards."""
    client, cn = new_client(), unique("head-op")
    sent = pki_message(client, scep.ra, csr_der(client, cn, scep.challenge))
    params = {"operation": "PKIOperation", "message": base64.b64encode(sent.der).decode()}
    head = scep.http.head(scep.path, params=params)
    assert head.status_code == 405 and head.headers["allow"] == "GET, POST"
    assert issued_named(api, cn) == []
    assert read_reply(scep.http.get(scep.path, params=params), client, scep.ra).status == SUCCESS
    assert len(issued_named(api, cn)) == 1


# --- bad input: SCEP we refuse, with the right failInfo, nothing written ----------------


def test_long_transaction_ids_sharing_a_prefix_are_two_transactions(scep: Scep) -> None:
    """Stored transactionIDs are at most 128 characters: longer ones are kept apart (by
    digest), not cut to a common prefix that would make two requesters one."""
    shared = "t" * 128
    for suffix in ("A", "B"):
        device = new_client(f"long-{suffix}")
        payload = csr_der(device, f"long-{suffix}", scep.challenge)
        _, reply = scep.enroll(device, payload, transaction_id=shared + suffix)
        assert reply.status == SUCCESS, reply
        assert reply.transaction_id == shared + suffix


def test_refusals_carry_fail_info_and_write_nothing(scep: Scep, api: httpx.Client) -> None:
    before = scep_requests(api)
    refused = unique("refused-cn")
    client = new_client()
    cases: list[tuple[str, Sent]] = []
    # an envelope for someone else
    stranger = new_client("stranger")
    cases.append(
        (
            BAD_MESSAGE_CHECK,
            pki_message(client, stranger.cert, csr_der(client, refused, scep.challenge)),
        )
    )
    # an unsupported content cipher
    envelope = asn1_cms.ContentInfo.load(
        cms.encrypt_enveloped(csr_der(client, refused, scep.challenge), scep.ra, "aes128_cbc")
    )
    envelope["content"]["encrypted_content_info"]["content_encryption_algorithm"] = (
        algos.EncryptionAlgorithm(
            {"algorithm": "aes128_ofb", "parameters": core.OctetString(os.urandom(16))}
        )
    )
    cases.append((BAD_ALG, pki_message(client, scep.ra, b"", envelope=envelope.dump(force=True))))
    # a bad signature: one flipped byte in the signature value
    good = pki_message(client, scep.ra, csr_der(client, refused, scep.challenge))
    info = asn1_cms.ContentInfo.load(good.der)
    signer = info["content"]["signer_infos"][0]
    signature = bytearray(signer["signature"].native)
    signature[10] ^= 0xFF
    signer["signature"] = bytes(signature)
    cases.append((BAD_MESSAGE_CHECK, Sent(info.dump(force=True), good.transaction_id, good.nonce)))
    # no challenge, a wrong challenge
    cases.append((BAD_REQUEST, pki_message(client, scep.ra, csr_der(client, refused, None))))
    cases.append((BAD_REQUEST, pki_message(client, scep.ra, csr_der(client, refused, "wrong"))))
    # a CSR that is not one
    cases.append((BAD_REQUEST, pki_message(client, scep.ra, b"\x30\x03\x02\x01\x00")))
    # a poll for a transaction nobody started
    poll = issuer_and_subject(scep.ca.subject, refused)
    cases.append((BAD_CERT_ID, pki_message(client, scep.ra, poll, kind=CERT_POLL)))
    for fail_info, sent in cases:
        reply = read_reply(scep.post(sent), client, scep.ra)
        assert (reply.status, reply.fail_info) == (FAILURE, fail_info), fail_info
        assert reply.recipient_nonce == sent.nonce
        assert reply.transaction_id == sent.transaction_id
    assert scep_requests(api) == before
    assert issued_named(api, refused) == []


@pytest.mark.parametrize("kind", ["23", "3", "99"], ids=["unknown", "certrep", "unassigned"])
def test_a_message_type_we_do_not_answer_is_failure_bad_request(
    scep: Scep, api: httpx.Client, kind: str
) -> None:
    """A well-formed, signed pkiMessage whose messageType is no request we know (or a
    CertRep, the server's own) is a transaction "not permitted or supported": CertRep
    FAILURE badRequest with transactionID and nonce echoed (RFC 8894 3.2.1.4), not a 400,
    and nothing written."""
    before = scep_requests(api)
    client, cn = new_client(), unique("odd-type")
    sent = pki_message(client, scep.ra, csr_der(client, cn, scep.challenge), kind=kind)
    reply = read_reply(scep.post(sent), client, scep.ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST)
    assert (reply.transaction_id, reply.recipient_nonce) == (sent.transaction_id, sent.nonce)
    assert scep_requests(api) == before
    assert issued_named(api, cn) == []


def test_dynamic_challenge_is_single_use(scep: Scep, api: httpx.Client) -> None:
    ca_id = rsa_ca(api, unique("SCEP Dynamic Root"))
    path = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", auto_approve=True)
    _ca, ra = split(ca_certificates(scep.http, path))
    shown = data(api.get(f"{API}/scep/challenge/{ca_id}"))
    assert shown["challenge_type"] == "dynamic" and shown["expires_at"]
    other = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    assert other != shown["challenge"]
    first, second = new_client(), new_client()
    ok = read_reply(
        scep.post(pki_message(first, ra, csr_der(first, "dyn-1", shown["challenge"])), path),
        first,
        ra,
    )
    assert ok.status == SUCCESS
    reused = read_reply(
        scep.post(pki_message(second, ra, csr_der(second, "dyn-2", shown["challenge"])), path),
        second,
        ra,
    )
    assert (reused.status, reused.fail_info) == (FAILURE, BAD_REQUEST)
    # regenerate voids the unused one
    data(api.post(f"{API}/scep/challenge/{ca_id}/regenerate"))
    voided = read_reply(
        scep.post(pki_message(second, ra, csr_der(second, "dyn-3", other)), path), second, ra
    )
    assert (voided.status, voided.fail_info) == (FAILURE, BAD_REQUEST)


def test_a_refused_enrollment_leaves_its_dynamic_challenge_unspent(
    scep: Scep, api: httpx.Client
) -> None:
    """The challenge is spent after the certificate is signed, in the same transaction: an
    enrollment the issuance refuses (an RSA-1024 key, under the key floor) leaves it usable."""
    ca_id = rsa_ca(api, unique("SCEP Unspent Root"))
    path = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", auto_approve=True)
    _ca, ra = split(ca_certificates(scep.http, path))
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    weak, good = new_client(bits=1024), new_client()
    weak_cn, good_cn = unique("weak-key"), unique("after-weak")
    refused = read_reply(
        scep.post(pki_message(weak, ra, csr_der(weak, weak_cn, challenge)), path), weak, ra
    )
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)
    assert issued_named(api, weak_cn) == []
    ok = read_reply(
        scep.post(pki_message(good, ra, csr_der(good, good_cn, challenge)), path), good, ra
    )
    assert ok.status == SUCCESS
    assert len(issued_named(api, good_cn)) == 1


def test_static_challenge_regenerate(scep: Scep, api: httpx.Client) -> None:
    ca_id = rsa_ca(api, unique("SCEP Static Root"))
    path = profile(api, scep, ca_id=ca_id, auto_approve=True)
    _, ra = split(ca_certificates(scep.http, path))
    old = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    assert data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"] == old
    new = data(api.post(f"{API}/scep/challenge/{ca_id}/regenerate"))["challenge"]
    assert new != old
    client = new_client()
    stale = read_reply(
        scep.post(pki_message(client, ra, csr_der(client, "s", old)), path), client, ra
    )
    assert (stale.status, stale.fail_info) == (FAILURE, BAD_REQUEST)
    fresh = read_reply(
        scep.post(pki_message(client, ra, csr_der(client, "s", new)), path), client, ra
    )
    assert fresh.status == SUCCESS


def test_renewal_needs_a_good_certificate_of_ours(scep: Scep, api: httpx.Client) -> None:
    device = new_client()
    _, reply = scep.enroll(device, csr_der(device, "renew-me", scep.challenge))
    (issued,) = reply.certificates
    holder = Client(device.key, issued)
    # renewal signed by the issued certificate: no challenge needed
    _, renewed = scep.enroll(holder, csr_der(holder, "renew-me", None), kind=RENEWAL_REQ)
    assert (
        renewed.status == SUCCESS and renewed.certificates[0].serial_number != issued.serial_number
    )
    # the same RenewalReq again (an answer lost on the way): the same certificate, not a new one
    before = len(issued_named(api, "renew-me"))
    renewal = csr_der(holder, "renew-me", None)
    first, once = scep.enroll(holder, renewal, kind=RENEWAL_REQ)
    _, again = scep.enroll(holder, renewal, kind=RENEWAL_REQ, transaction_id=first.transaction_id)
    assert once.status == again.status == SUCCESS
    assert again.certificates[0].serial_number == once.certificates[0].serial_number
    assert len(issued_named(api, "renew-me")) == before + 1
    # signed by a foreign certificate
    foreign = new_client("foreign")
    _, refused = scep.enroll(foreign, csr_der(foreign, "f", None), kind=RENEWAL_REQ)
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_CERT_ID)
    # signed by a revoked certificate of ours
    wanted = format(issued.serial_number, "X")
    row = next(
        c for c in issued_named(api, "renew-me") if c["serial_number"].upper().endswith(wanted)
    )
    data(api.post(f"{API}/certificates/{row['id']}/revoke", json={"reason": "superseded"}))
    _, revoked = scep.enroll(holder, csr_der(holder, "renew-me", None), kind=RENEWAL_REQ)
    assert (revoked.status, revoked.fail_info) == (FAILURE, BAD_CERT_ID)


def test_a_renewal_without_sans_keeps_the_names_it_renews(scep: Scep, api: httpx.Client) -> None:
    """A RenewalReq whose CSR names no SAN renews the signer's names, whatever they are: here
    a single label the API was asked for (`dns:device-...`), which no CN-as-SAN rule would
    give back."""
    label = unique("device").lower()
    device = new_client(label)
    asked = x509.CertificateSigningRequestBuilder().subject_name(device.cert.subject)
    pem = asked.sign(device.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    body = {"ca_id": scep.ca_id, "csr": pem.decode(), "san": [f"dns:{label}"]}
    issued = data(api.post(f"{API}/certificates", json=body), 201)
    assert issued["san"] == [f"dns:{label}"]
    detail = data(api.get(f"{API}/certificates/{issued['id']}"))
    holder = Client(device.key, x509.load_pem_x509_certificate(detail["pem"].encode()))
    _, renewed = scep.enroll(holder, csr_der(holder, label, None), kind=RENEWAL_REQ)
    assert renewed.status == SUCCESS, renewed
    names = renewed.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(names.value) == [x509.DNSName(label)]


def test_a_ca_that_expires_once_chosen_keeps_its_profile_answering(
    scep: Scep, api: httpx.Client
) -> None:
    """A CA that expires after it was chosen: the profile keeps answering the protocol
    (GetCACert as before, an enrollment with CertRep FAILURE, never a plain 422), and the ACME
    settings and the profile naming it unchanged can still be saved. Only choosing an expired
    CA is refused."""
    cert, key = self_signed_ca(unique("Short SCEP Root"), timedelta(seconds=6))
    bundle = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_id = data(import_ca_file(api, bundle, "short.pem"), 201)["id"]
    path = profile(api, scep, ca_id=ca_id, auto_approve=True)
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": ca_id}))
    time.sleep((cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() + 1)
    _, ra = split(ca_certificates(scep.http, path))
    client = new_client()
    sent = pki_message(client, ra, csr_der(client, "too-late", challenge))
    assert read_reply(scep.post(sent, path), client, ra).status == FAILURE
    unchanged = {"issuing_ca_id": ca_id, "website": "https://pki.example.com/"}
    assert (
        data(api.patch(f"{API}/acme/settings", json=unchanged))["website"] == unchanged["website"]
    )
    again = {"ca_id": ca_id, "auto_approve": False}  # the RA ends with its CA: not renewed
    saved = data(api.patch(f"{API}/scep/profiles/{path.split('/')[2]}", json=again))
    assert saved["auto_approve"] is False


# --- the approval queue over the API, with CertPoll -------------------------------------


def test_pending_poll_approve_and_reject(scep: Scep, api: httpx.Client) -> None:
    path = profile(api, scep, auto_approve=False)
    _, ra = split(ca_certificates(scep.http, path))
    client = new_client()
    sent = pki_message(client, ra, csr_der(client, "queued", scep.challenge))
    assert read_reply(scep.post(sent, path), client, ra).status == PENDING
    poll_payload = issuer_and_subject(scep.ca.subject, "queued")
    poll = pki_message(client, ra, poll_payload, kind=CERT_POLL, transaction_id=sent.transaction_id)
    assert read_reply(scep.post(poll, path), client, ra).status == PENDING
    pending = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))
    row = next(r for r in pending if r["transaction_id"] == sent.transaction_id)
    approved = data(api.post(f"{API}/scep/{row['id']}/approve"))
    assert approved["status"] == "issued" and approved["certificate_id"]
    error(api.post(f"{API}/scep/{row['id']}/approve"), 409)
    poll = pki_message(client, ra, poll_payload, kind=CERT_POLL, transaction_id=sent.transaction_id)
    got = read_reply(scep.post(poll, path), client, ra)
    assert got.status == SUCCESS and got.certificates[0].subject.rfc4514_string() == "CN=queued"
    # and a rejected one
    other = new_client()
    sent = pki_message(other, ra, csr_der(other, "refused", scep.challenge))
    assert read_reply(scep.post(sent, path), other, ra).status == PENDING
    pending = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))
    row = next(r for r in pending if r["transaction_id"] == sent.transaction_id)
    rejected = data(api.post(f"{API}/scep/{row['id']}/reject", json={"reason": "Invalid device"}))
    assert rejected["status"] == "rejected" and rejected["reason"] == "Invalid device"
    txid = sent.transaction_id

    def send_again(challenge: str | None) -> Reply:
        again = pki_message(other, ra, csr_der(other, "refused", challenge), transaction_id=txid)
        return read_reply(scep.post(again, path), other, ra)

    # The same request sent again is how scepclient polls: it gets the rejection...
    told = send_again(scep.challenge)
    assert (told.status, told.fail_info) == (FAILURE, BAD_REQUEST)
    # ... as it does, every time, without a valid challenge ...
    for challenge in (None, "wrong"):
        refused = send_again(challenge)
        assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST), challenge
    # ... while with one, once the rejection was told, it is a new request (queued here).
    assert send_again(scep.challenge).status == PENDING
    rows = [r for r in data(api.get(f"{API}/scep/requests")) if r["transaction_id"] == txid]
    assert [r["status"] for r in rows] == ["pending", "rejected"]
    assert send_again(scep.challenge).status == PENDING  # polling the new one
    assert (
        len([r for r in data(api.get(f"{API}/scep/requests")) if r["transaction_id"] == txid]) == 2
    )


def test_a_request_no_approval_could_sign_is_refused_not_queued(
    scep: Scep, api: httpx.Client
) -> None:
    """With auto_approve off, a request the issuance would refuse whatever the admin decides
    (here an RSA-1024 key, under the key floor) gets FAILURE badRequest at once, as it does
    when auto-approved: not PENDING, to be polled for until an approval that can only fail."""
    path = profile(api, scep, auto_approve=False)
    _, ra = split(ca_certificates(scep.http, path))
    before = scep_requests(api)
    weak = new_client(bits=1024)
    sent = pki_message(weak, ra, csr_der(weak, unique("weak-queued"), scep.challenge))
    reply = read_reply(scep.post(sent, path), weak, ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep_requests(api) == before
    # nor a key revoked as compromised (enrolled once on the default profile)
    device, cn = new_client(), unique("compromised-queued")
    _, issued = scep.enroll(device, csr_der(device, cn, scep.challenge))
    assert issued.status == SUCCESS, issued
    (row,) = issued_named(api, cn)
    data(api.post(f"{API}/certificates/{row['id']}/revoke", json={"reason": "keyCompromise"}))
    before = scep_requests(api)
    sent = pki_message(device, ra, csr_der(device, cn, scep.challenge))
    reply = read_reply(scep.post(sent, path), device, ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST)
    assert scep_requests(api) == before


def test_queue_without_challenge(scep: Scep, api: httpx.Client) -> None:
    path = profile(api, scep, auto_approve=True, queue_without_challenge=True)
    _, ra = split(ca_certificates(scep.http, path))
    client = new_client()
    reply = read_reply(
        scep.post(pki_message(client, ra, csr_der(client, "nochal", None)), path), client, ra
    )
    assert reply.status == PENDING
    listed = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))
    assert any(r["common_name"] == "nochal" and r["challenge"] == "missing" for r in listed)


# --- management API ------------------------------------------------------------------


def test_config_shape_and_validation(scep: Scep, api: httpx.Client) -> None:
    config = data(api.get(f"{API}/scep/config"))
    for field in ("enabled", "url", "ca_id", "ca_ident", "auto_approve", "challenge_validity"):
        assert field in config
    assert config["url"] == "/scep/pkiclient.exe" and config["ca_id"] == scep.ca_id
    error(api.patch(f"{API}/scep/config", json={"ca_id": 999999}), 404)
    error(api.patch(f"{API}/scep/config", json={"challenge_validity": 0}), 422)
    error(api.patch(f"{API}/scep/config", json={"challenge_type": "sometimes"}), 422)
    for setting in ("enabled", "auto_approve", "challenge_validity", "use_ra"):
        refused = error(api.patch(f"{API}/scep/config", json={setting: None}), 422)
        assert f"{setting} cannot be null" in refused
    assert data(api.get(f"{API}/scep/config")) == config  # nothing changed
    cleared = data(api.patch(f"{API}/scep/config", json={"template_id": None}))
    assert cleared["ca_id"] == scep.ca_id
    error(api.get(f"{API}/scep/requests", params={"status": "maybe"}), 400)
    error(api.post(f"{API}/scep/999999/approve"), 404)
    error(api.get(f"{API}/scep/challenge/999999"), 404)
    error(api.post(f"{API}/scep/profiles", json={"slug": "Bad Slug!"}), 400)
    before = data(api.get(f"{API}/scep/stats"))
    client = new_client()
    _, reply = scep.enroll(client, csr_der(client, "stats-device", scep.challenge))
    assert reply.status == SUCCESS, reply
    after = data(api.get(f"{API}/scep/stats"))
    assert after["issued"] >= before["issued"] + 1  # other tests may enroll meanwhile
    assert after["enrollments"] >= before["enrollments"] + 1


def test_management_needs_permissions(server: Server, api: httpx.Client) -> None:
    name = unique("viewer")
    body = {"username": name, "password": "viewer-password-1234", "role": "viewer"}
    data(api.post(f"{API}/users", json=body), 201)
    with server.client(api_key="") as anonymous:
        error(anonymous.get(f"{API}/scep/config"), 401)
    with server.client(api_key="") as viewer:
        login = viewer.post(
            f"{API}/auth/login/password",
            json={"username": name, "password": "viewer-password-1234"},
        )
        assert login.status_code == 200, login.text
        csrf = login.json()["data"]["csrf_token"]
        error(viewer.get(f"{API}/scep/config"), 403)
        error(viewer.patch(f"{API}/scep/config", json={}, headers={"X-CSRF-Token": csrf}), 403)


def test_the_request_queue_shows_no_challenge_to_readers(
    server: Server, scep: Scep, api: httpx.Client
) -> None:
    """A CSR carries its challengePassword in clear: the queue hands it only to whom may see
    the challenges (write:scep), not to a reader such as an auditor, who could enroll with
    the CA's static password."""
    path = profile(api, scep, auto_approve=False)
    _, ra = split(ca_certificates(scep.http, path))
    client = new_client()
    sent = pki_message(client, ra, csr_der(client, unique("audited"), scep.challenge))
    assert read_reply(scep.post(sent, path), client, ra).status == PENDING
    name = unique("auditor")
    body = {"username": name, "password": "auditor-password-1234", "role": "auditor"}
    data(api.post(f"{API}/users", json=body), 201)
    with server.client(api_key="") as auditor:
        login = {"username": name, "password": "auditor-password-1234"}
        assert auditor.post(f"{API}/auth/login/password", json=login).status_code == 200
        error(auditor.get(f"{API}/scep/challenge/{scep.ca_id}"), 403)
        listed = data(auditor.get(f"{API}/scep/requests", params={"per_page": 100}))
        (row,) = [r for r in listed if r["transaction_id"] == sent.transaction_id]
        assert row["csr"] is None  # its challengePassword is the CA's static password
    listed = data(api.get(f"{API}/scep/requests", params={"per_page": 100}))
    (row,) = [r for r in listed if r["transaction_id"] == sent.transaction_id]
    csr = x509.load_pem_x509_csr(row["csr"].encode())  # an admin still gets it whole
    password = x509.oid.AttributeOID.CHALLENGE_PASSWORD
    assert csr.attributes.get_attribute_for_oid(password).value == scep.challenge.encode()
    # and at rest it is sealed, like the challenge itself: no column holds the password
    needle = scep.challenge.encode()
    stored = [c for c, value in database_values(server) if needle in readable(value)]
    assert stored == []


def readable(value: bytes) -> bytes:
    """A stored value with the DER inside any PEM block it holds (base64 hides the text)."""
    blocks = re.findall(rb"-----BEGIN [A-Z ]+-----([A-Za-z0-9+/=\s]+)-----END", value)
    return value + b"".join(base64.b64decode(b"".join(block.split())) for block in blocks)


# --- CA kinds, CA without RA, rollover ---------------------------------------------------


def test_ec_ca_answers_through_its_rsa_ra(scep: Scep, api: httpx.Client) -> None:
    body = {"common_name": unique("SCEP EC Root"), "key_algorithm": "EC", "key_size": 256}
    ca_id = int(data(api.post(f"{API}/cas", json={**body, "ca_type": "root"}), 201)["id"])
    path = profile(api, scep, ca_id=ca_id, auto_approve=True)
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    ca, ra = split(ca_certificates(scep.http, path))
    assert isinstance(ra.public_key(), rsa.RSAPublicKey)
    client = new_client()
    reply = read_reply(
        scep.post(pki_message(client, ra, csr_der(client, "ec-issued", challenge)), path),
        client,
        ra,
    )
    assert reply.status == SUCCESS and reply.certificates[0].issuer == ca.subject


RESPONDER_USAGES = ["digitalSignature", "keyEncipherment", "keyCertSign", "cRLSign"]


def ca_with_usages(api: httpx.Client, name: str, usages: list[str], algorithm: str = "RSA") -> int:
    """A root whose keyUsage is `usages`, made through a CA template."""
    size = 2048 if algorithm == "RSA" else 256
    template = {
        "name": unique("SCEP CA usages"),
        "key_type": algorithm,
        "key_size": size,
        "key_usage": usages,
        "basic_constraints": {"ca": True},
    }
    template_id = data(api.post(f"{API}/templates", json=template), 201)["id"]
    body = {"common_name": name, "key_algorithm": algorithm, "key_size": size}
    created = api.post(f"{API}/cas", json={**body, "ca_type": "root", "template_id": template_id})
    return int(data(created, 201)["id"])


def test_rsa_ca_without_ra(scep: Scep, api: httpx.Client) -> None:
    ca_id = ca_with_usages(api, unique("SCEP No RA Root"), RESPONDER_USAGES)
    path = profile(api, scep, ca_id=ca_id, auto_approve=True, use_ra=False)
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    response = scep.http.get(f"{path}?operation=GetCACert")
    assert response.headers["content-type"] == "application/x-x509-ca-cert"
    ca = x509.load_der_x509_certificate(response.content)
    client = new_client()
    reply = read_reply(
        scep.post(pki_message(client, ca, csr_der(client, "no-ra", challenge)), path), client, ca
    )
    assert reply.status == SUCCESS
    body = {"common_name": unique("SCEP EC"), "key_algorithm": "EC", "key_size": 256}
    ec_id = int(data(api.post(f"{API}/cas", json={**body, "ca_type": "root"}), 201)["id"])
    slug = unique("p").lower()
    refused = api.post(
        f"{API}/scep/profiles",
        json={"slug": slug, "enabled": True, "ca_id": ec_id, "use_ra": False},
    )
    error(refused, 422)


def test_a_ca_answering_without_ra_must_allow_signing_and_key_encipherment(
    scep: Scep, api: httpx.Client
) -> None:
    """RFC 8894 section 2.1.2: the CA certificate that answers by itself (use_ra false)
    signs the CertReps and decrypts the requests, so its keyUsage must allow
    digitalSignature and keyEncipherment; clients pick the encryption certificate by it.
    Tessera's CAs (digitalSignature, keyCertSign, cRLSign) are refused, 422 saying why,
    nothing saved; a CA without a keyUsage extension (no restriction, RFC 5280) answers."""
    refused_cas = {
        "keyEncipherment": rsa_ca(api, unique("SCEP Plain Root")),
        "digitalSignature": ca_with_usages(
            api, unique("SCEP No Signing Root"), ["keyEncipherment", "keyCertSign", "cRLSign"]
        ),
    }
    for missing, ca_id in refused_cas.items():
        slug = unique("p").lower()
        body = {"slug": slug, "enabled": True, "ca_id": ca_id, "use_ra": False}
        message = error(api.post(f"{API}/scep/profiles", json=body), 422)
        assert f"lacks {missing}" in message and "RFC 8894" in message, message
        error(api.get(f"{API}/scep/profiles/{slug}"), 404)
    # a profile that answers through its RA may not drop it for such a CA either
    path = profile(api, scep, ca_id=refused_cas["keyEncipherment"])
    slug = path.split("/")[2]
    error(api.patch(f"{API}/scep/profiles/{slug}", json={"use_ra": False}), 422)
    assert data(api.get(f"{API}/scep/profiles/{slug}"))["use_ra"] is True
    # no keyUsage at all: no restriction
    rsa_key = rsa.generate_private_key(65537, 2048)
    cert, key = self_signed_ca(
        unique("SCEP No KU Root"), timedelta(days=30), key=rsa_key, key_usage=False
    )
    bundle = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_id = data(import_ca_file(api, bundle, "no-ku.pem"), 201)["id"]
    path = profile(api, scep, ca_id=ca_id, auto_approve=True, use_ra=False)
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    client = new_client()
    sent = pki_message(client, cert, csr_der(client, unique("no-ku"), challenge))
    assert read_reply(scep.post(sent, path), client, cert).status == SUCCESS


def test_rollover_serves_the_next_ca(scep: Scep, api: httpx.Client) -> None:
    current, upcoming = rsa_ca(api, unique("SCEP Old")), rsa_ca(api, unique("SCEP New"))
    path = profile(api, scep, ca_id=current, next_ca_id=upcoming, auto_approve=True)
    caps = scep.http.get(f"{path}?operation=GetCACaps").text.split()
    assert "GetNextCACert" in caps
    _, ra = split(ca_certificates(scep.http, path))
    response = scep.http.get(f"{path}?operation=GetNextCACert")
    assert response.headers["content-type"] == "application/x-x509-next-ca-cert"
    signed = cms.load_signed(response.content)
    cms.verify(signed, cms.signer_certificate(signed))
    assert cms.signer_certificate(signed) == ra
    assert signed.content
    inner = asn1_cms.ContentInfo.load(signed.content)["content"]
    certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in inner["certificates"]]
    next_ca, next_ra = split(certs)
    assert next_ra.issuer == next_ca.subject
    # a client that already encrypts to the next RA is served
    challenge = data(api.get(f"{API}/scep/challenge/{current}"))["challenge"]
    client = new_client()
    sent = pki_message(client, next_ra, csr_der(client, "early", challenge))
    reply = read_reply(scep.post(sent, path), client, ra)
    assert reply.status == SUCCESS


def test_a_rollover_takes_a_next_ca_valid_only_later(scep: Scep, api: httpx.Client) -> None:
    """RFC 8894 4.7: the rollover hands out "a new CA certificate that is valid in the future
    once the current certificate has expired": a next CA not valid yet is what a rollover is
    for, and saving it is not refused as choosing a CA to issue with now is."""
    later, key = self_signed_ca(
        unique("SCEP Later Root"),
        timedelta(days=730),
        -timedelta(days=30),
        rsa.generate_private_key(65537, 2048),
    )
    bundle = later.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    upcoming = int(data(import_ca_file(api, bundle, "later.pem"), 201)["id"])
    path = profile(api, scep, next_ca_id=upcoming, auto_approve=True)
    response = scep.http.get(f"{path}?operation=GetNextCACert")
    assert response.status_code == 200, response.text
    signed = cms.load_signed(response.content)
    inner = asn1_cms.ContentInfo.load(signed.content or b"")["content"]
    certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in inner["certificates"]]
    assert later in certs


def test_a_rollover_without_ra_needs_an_rsa_next_ca(scep: Scep, api: httpx.Client) -> None:
    """With use_ra false the CA itself opens the envelopes, so the next CA of a rollover must
    be RSA, and its keyUsage allow keyEncipherment, as the current one's must: refused when
    saved (422), not a profile whose GetNextCACert and misaddressed requests all fail with a
    plain 422 afterwards."""
    body = {"common_name": unique("SCEP EC Next"), "key_algorithm": "EC", "key_size": 256}
    ec_id = int(data(api.post(f"{API}/cas", json={**body, "ca_type": "root"}), 201)["id"])
    current = ca_with_usages(api, unique("SCEP RSA Current"), RESPONDER_USAGES)
    plain = rsa_ca(api, unique("SCEP RSA Next"))  # RSA, but its keyUsage has no keyEncipherment
    slug = unique("p").lower()
    settings = {"slug": slug, "enabled": True, "ca_id": current, "use_ra": False}
    error(api.post(f"{API}/scep/profiles", json={**settings, "next_ca_id": ec_id}), 422)
    data(api.post(f"{API}/scep/profiles", json=settings), 201)
    error(api.patch(f"{API}/scep/profiles/{slug}", json={"next_ca_id": ec_id}), 422)
    refused = error(api.patch(f"{API}/scep/profiles/{slug}", json={"next_ca_id": plain}), 422)
    assert "next CA certificate" in refused and "lacks keyEncipherment" in refused, refused
    path = f"/scep/{slug}/pkiclient.exe"
    assert "GetNextCACert" not in scep.http.get(f"{path}?operation=GetCACaps").text.split()


def test_a_disabled_next_ca_still_gets_misaddressed_requests_a_certrep(
    scep: Scep, api: httpx.Client
) -> None:
    """During a rollover a request the current RA cannot open is tried with the next RA: a
    next CA that was disabled meanwhile cannot open it either, and the client still gets its
    CertRep FAILURE badMessageCheck, not a plain 422."""
    current, upcoming = rsa_ca(api, unique("SCEP Cur")), rsa_ca(api, unique("SCEP Off Next"))
    path = profile(api, scep, ca_id=current, next_ca_id=upcoming, auto_approve=True)
    _, ra = split(ca_certificates(scep.http, path))
    data(api.patch(f"{API}/cas/{upcoming}", json={"is_active": False}))
    client, stranger = new_client(), new_client("stranger")
    sent = pki_message(client, stranger.cert, csr_der(client, "misaddressed", None))
    reply = read_reply(scep.post(sent, path), client, ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_MESSAGE_CHECK)


def test_served_on_https_too(server: Server, scep: Scep) -> None:
    with server.client(api_key="") as https:
        caps = https.get("/scep/pkiclient.exe?operation=GetCACaps")
        assert caps.status_code == 200 and "SCEPStandard" in caps.text.split()
        alias = https.get("/cgi-bin/pkiclient.exe?operation=GetCACert")
        assert alias.headers["content-type"] == "application/x-x509-ca-ra-cert"
        client = new_client()
        sent = pki_message(client, scep.ra, csr_der(client, "over-tls", scep.challenge))
        response = https.post("/scep/pkiclient.exe?operation=PKIOperation", content=sent.der)
        assert read_reply(response, client, scep.ra).status == SUCCESS


def test_answers_follow_ca_and_profile_changes_at_once(scep: Scep, api: httpx.Client) -> None:
    """Each process keeps the responders it built; a disabled CA or a profile moved to another
    CA is still seen on the very next request."""
    first, second = rsa_ca(api, unique("SCEP Cached A")), rsa_ca(api, unique("SCEP Cached B"))
    path = profile(api, scep, ca_id=first, auto_approve=True)
    slug = path.split("/")[2]
    challenge = data(api.get(f"{API}/scep/challenge/{first}"))["challenge"]
    for _ in range(3):  # every worker has built and kept it
        ca, ra = split(ca_certificates(scep.http, path))
    client = new_client()
    sent = pki_message(client, ra, csr_der(client, "cached", challenge))
    assert read_reply(scep.post(sent, path), client, ra).status == SUCCESS

    data(api.patch(f"{API}/cas/{first}", json={"is_active": False}))
    refused = scep.http.get(f"{path}?operation=GetCACert")
    assert refused.status_code >= 400 and "cannot sign" in refused.text
    sent = pki_message(client, ra, csr_der(client, "cached-off", challenge))
    assert scep.post(sent, path).status_code >= 400
    data(api.patch(f"{API}/cas/{first}", json={"is_active": True}))
    assert split(ca_certificates(scep.http, path)) == (ca, ra)

    data(api.patch(f"{API}/scep/profiles/{slug}", json={"ca_id": second}))
    moved_ca, moved_ra = split(ca_certificates(scep.http, path))
    assert moved_ca.subject != ca.subject and moved_ra.issuer == moved_ca.subject


# --- the signed attributes RFC 5652 requires --------------------------------------------

CONTENT_TYPE, MESSAGE_DIGEST, SIGNING_TIME = (
    "1.2.840.113549.1.9.3",
    "1.2.840.113549.1.9.4",
    "1.2.840.113549.1.9.5",
)
Attributes = list[asn1_cms.CMSAttribute]


def re_signed(client: Client, sent: Sent, edit: Callable[[Attributes], Attributes]) -> Sent:
    """The pkiMessage with its signed attributes edited, signed again by the client: a
    message whose signature verifies, so that only what the attributes say is judged."""
    info = asn1_cms.ContentInfo.load(sent.der)
    signer = info["content"]["signer_infos"][0]
    attrs = [asn1_cms.CMSAttribute.load(a.dump()) for a in signer["signed_attrs"]]
    signer["signed_attrs"] = asn1_cms.CMSAttributes(edit(attrs))
    info = asn1_cms.ContentInfo.load(info.dump(force=True))
    signer = info["content"]["signer_infos"][0]
    to_sign = b"\x31" + signer["signed_attrs"].dump()[1:]  # as a SET (RFC 5652 5.4)
    signer["signature"] = client.key.sign(to_sign, asym_padding.PKCS1v15(), hashes.SHA256())
    return Sent(info.dump(), sent.transaction_id, sent.nonce)


def without(oid: str) -> Callable[[Attributes], Attributes]:
    return lambda attrs: [a for a in attrs if a["type"].dotted != oid]


def content_type(*values: str, times: int = 1) -> Callable[[Attributes], Attributes]:
    """The contentType attribute replaced by `times` attributes with `values`."""
    added = [asn1_cms.CMSAttribute({"type": CONTENT_TYPE, "values": list(values)})] * times
    return lambda attrs: without(CONTENT_TYPE)(attrs) + added


def second_message_digest(attrs: Attributes) -> Attributes:
    wrong = attribute(MESSAGE_DIGEST, core.OctetString(b"\x00" * 32))
    return [*attrs, asn1_cms.CMSAttribute.load(wrong.dump())]


def signing_time(moment: datetime) -> Callable[[Attributes], Attributes]:
    added = asn1_cms.CMSAttribute({"type": SIGNING_TIME, "values": [core.UTCTime(moment)]})
    return lambda attrs: [*attrs, added]


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (without(CONTENT_TYPE), "lack the contentType"),
        (content_type("enveloped_data"), "contentType attribute differs"),
        (content_type("data", "data"), "contentType attribute must have exactly one value"),
        (content_type("data", times=2), "carry contentType 2 times"),
        (second_message_digest, "carry messageDigest 2 times"),
    ],
    ids=["no-content-type", "other-content-type", "two-values", "twice", "two-digests"],
)
def test_signed_attributes_rfc5652_requires_are_checked(
    scep: Scep, api: httpx.Client, edit: Callable[[Attributes], Attributes], why: str
) -> None:
    """RFC 5652 5.3 and 11: the signed attributes include exactly one contentType, equal to
    the eContentType (id-data for SCEP, RFC 8894 3.2), and exactly one messageDigest. A
    message that breaks this is malformed, refused as a bad signature is: CertRep FAILURE
    badMessageCheck, nothing issued or stored."""
    before = scep_requests(api)
    client, cn = new_client(), unique("attrs-cn")
    sent = re_signed(
        client, pki_message(client, scep.ra, csr_der(client, cn, scep.challenge)), edit
    )
    reply = read_reply(scep.post(sent), client, scep.ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_MESSAGE_CHECK), reply
    assert why in (reply.fail_text or ""), reply
    assert reply.transaction_id == sent.transaction_id and reply.recipient_nonce == sent.nonce
    assert scep_requests(api) == before
    assert issued_named(api, cn) == []


@pytest.mark.parametrize(
    "moment",
    [None, datetime(1990, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=3650)],
    ids=["re-signed-unchanged", "signed-in-1990", "signed-in-ten-years"],
)
def test_signing_time_is_ignored(scep: Scep, moment: datetime | None) -> None:
    """signingTime, when a client adds it, is signed but not judged (docs/scep.md): devices
    enroll before their clock is set. The message re-signed unchanged enrolls too, so the
    refusals above are the attributes', not the re-signing's."""
    client = new_client()
    edit = signing_time(moment) if moment else (lambda attrs: attrs)
    payload = csr_der(client, unique("signing-time"), scep.challenge)
    sent = re_signed(client, pki_message(client, scep.ra, payload), edit)
    assert read_reply(scep.post(sent), client, scep.ra).status == SUCCESS
