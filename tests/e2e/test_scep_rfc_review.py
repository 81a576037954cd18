"""SCEP details from a review against RFC 8894 (and the CMS of RFC 5652 it is built on),
each against a real `tessera serve`, with the small client of test_scep_protocol.py."""

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tessera.protocols.scep import cms
from tests.e2e.helpers import data, import_ca_file, unique
from tests.e2e.test_scep_protocol import (
    SUCCESS,
    Client,
    Scep,
    Sent,
    ca_certificates,
    csr_der,
    default_profile,
    new_client,
    pki_message,
    profile,
    read_reply,
    split,
)
from tests.support import Server

API = "/api/v2"


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP Review Root") as made:
        yield made


def rfc7093_key_id(key: rsa.RSAPrivateKey) -> bytes:
    """A key identifier by RFC 7093 method 1 (the leftmost 160 bits of the SHA-256 of the
    subjectPublicKey), as Let's Encrypt and micromdm/scep's cryptoutil make them: not the
    SHA-1 of RFC 5280 section 4.2.1.2."""
    info = asn1_keys.PublicKeyInfo.load(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return hashlib.sha256(info["public_key"].contents[1:]).digest()[:20]


def certificate(key: rsa.RSAPrivateKey, cn: str, ca: bool = False) -> x509.Certificate:
    """A self-signed certificate whose subjectKeyIdentifier is `rfc7093_key_id`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier(rfc7093_key_id(key)), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(key, hashes.SHA256())


def signed_by_key_id(sent: Sent, key_id: bytes) -> Sent:
    """The message with its signer named by subjectKeyIdentifier (RFC 5652 5.3, version 3),
    as `openssl cms -sign -keyid` names it: the certificate's own extension value."""
    info = asn1_cms.ContentInfo.load(sent.der)
    signer = info["content"]["signer_infos"][0]
    signer["version"] = "v3"
    signer["sid"] = asn1_cms.SignerIdentifier({"subject_key_identifier": key_id})
    return Sent(info.dump(force=True), sent.transaction_id, sent.nonce)


def addressed_by_key_id(envelope: bytes, key_id: bytes) -> bytes:
    """The EnvelopedData with its recipient named by subjectKeyIdentifier (RFC 5652 6.2.1,
    version 2), as `openssl cms -encrypt -keyid` names it."""
    info = asn1_cms.ContentInfo.load(envelope)
    enveloped = info["content"]
    enveloped["version"] = "v2"
    recipient = enveloped["recipient_infos"][0].chosen
    recipient["version"] = "v2"
    recipient["rid"] = asn1_cms.RecipientIdentifier({"subject_key_identifier": key_id})
    return info.dump(force=True)


def test_a_signer_named_by_its_key_identifier_extension(scep: Scep) -> None:
    """RFC 5652 5.3 names the signer by subjectKeyIdentifier with the value of its
    certificate's extension, which need not be RFC 5280's SHA-1 of the key (RFC 7093's is
    not): the requester is found and answered, not refused badCertId as one that carries no
    certificate."""
    key = rsa.generate_private_key(65537, 2048)
    client = Client(key, certificate(key, "ski-signer"))
    sent = pki_message(client, scep.ra, csr_der(client, unique("ski-signer"), scep.challenge))
    reply = read_reply(scep.post(signed_by_key_id(sent, rfc7093_key_id(key))), client, scep.ra)
    assert reply.status == SUCCESS, reply


def test_a_ca_addressed_by_its_key_identifier_extension(scep: Scep, api: httpx.Client) -> None:
    """The same for the recipient (RFC 5652 6.2.1): a CA answering without RA whose
    subjectKeyIdentifier extension is not the SHA-1 of its key opens a request addressed to
    it by that extension, as `openssl cms -encrypt -keyid` addresses it."""
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = certificate(ca_key, unique("SCEP SKI Root"), ca=True)
    bundle = ca.public_bytes(serialization.Encoding.PEM) + ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_id = data(import_ca_file(api, bundle, "ski.pem"), 201)["id"]
    path = profile(api, scep, ca_id=ca_id, auto_approve=True, use_ra=False)
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    key = rsa.generate_private_key(65537, 2048)
    device = Client(key, certificate(key, "ski-device"))
    envelope = cms.encrypt_enveloped(
        csr_der(device, unique("ski-device"), challenge), ca, "aes128_cbc"
    )
    sent = pki_message(
        device, ca, b"", envelope=addressed_by_key_id(envelope, rfc7093_key_id(ca_key))
    )
    reply = read_reply(scep.post(sent, path), device, ca)
    assert reply.status == SUCCESS, reply


def test_the_challenge_of_a_ca_is_that_of_the_enabled_profile_using_it(
    scep: Scep, api: httpx.Client
) -> None:
    """A disabled profile uses no CA: the challenge `GET /scep/challenge/{ca_id}` shows is of
    the type of the enabled profile that answers for the CA (here a dynamic one), not the
    static one of a disabled default profile left pointing at it, with which its devices
    could only be refused "wrong challenge"."""
    data(api.patch(f"{API}/scep/config", json={"enabled": False}))
    path = profile(api, scep, challenge_type="dynamic", auto_approve=True)
    try:
        shown = data(api.get(f"{API}/scep/challenge/{scep.ca_id}"))
        assert shown["challenge_type"] == "dynamic", shown
        _, ra = split(ca_certificates(scep.http, path))
        device = new_client()
        sent = pki_message(device, ra, csr_der(device, unique("dyn-ca"), shown["challenge"]))
        assert read_reply(scep.post(sent, path), device, ra).status == SUCCESS
    finally:
        data(api.delete(f"{API}/scep/profiles/{path.split('/')[2]}"))
        data(api.patch(f"{API}/scep/config", json={"enabled": True}))
