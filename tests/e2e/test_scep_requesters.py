"""SCEP against a real `tessera serve`: what a request may get depends on who sends it.
- Malformed requests that cryptography refuses in its own ways still get a CertRep
  FAILURE (or a 400), never a 500.

The small SCEP client is the one of test_scep_protocol.py; what it cannot do (sign with an
EC key, write a CSR that no library would) is built here with asn1crypto."""

from collections.abc import Iterator, Sequence

import httpx
import pytest
from asn1crypto import core
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.e2e.helpers import data, unique
from tests.e2e.test_scep_protocol import (
    BAD_REQUEST,
    FAILURE,
    Scep,
    Sent,
    ca_certificates,
    csr_der,
    new_client,
    pki_message,
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
    """The default profile on an RSA root, auto-approving, with a static challenge."""
    with server.client() as api, httpx.Client(base_url=server.http_url, timeout=60) as http:
        ca_id = rsa_ca(api, unique("SCEP Requesters Root"))
        body = {"enabled": True, "ca_id": ca_id, "auto_approve": True}
        data(api.patch(f"{API}/scep/config", json=body))
        challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
        ca, ra = split(ca_certificates(http, "/scep/pkiclient.exe"))
        yield Scep(http, ca_id, ca, ra, challenge)


# --- building what the protocol module's client does not --------------------------------


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
