"""The SCEP answers' DER (CertRep, GetCACert, GetNextCACert), read back by asn1crypto in strict
mode, by openssl and by hand: the fields clients check, the signature, the envelope."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from tessera.domains.scep.types import Reply, Responder
from tessera.protocols.scep import cms, messages
from tests.tools import openssl

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"  # what strongSwan wants as the signature algorithm
CONTENT_TYPE, MESSAGE_DIGEST = "1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"
DER = serialization.Encoding.DER


@dataclass(frozen=True)
class Party:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    def pem_files(self, workdir: Path) -> tuple[str, str]:
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return str(cert), str(key)


def party(cn: str, serial: int, issuer: Party | None = None) -> Party:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # A UTF8String with an accent and an emailAddress: the issuer Name must be copied as is.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tessera été"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, f"{cn}@example.org"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(issuer.key if issuer else key, hashes.SHA256())
    )
    return Party(cert, key)


@dataclass(frozen=True)
class Pki:
    ca: Party
    ra: Party
    client: Party  # the requester's self-signed certificate
    issued: x509.Certificate

    @property
    def responder(self) -> Responder:
        return Responder(self.ra.cert, self.ra.key, [self.ra.cert, self.ca.cert])


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = party("Unit SCEP CA", 1)
    ra = party("Unit SCEP RA", 0x80 << 72, ca)  # the serial's DER needs a leading zero octet
    client = party("client", 0x7F)
    issued = party("issued", 0x1234, ca).cert
    return Pki(ca, ra, client, issued)


def request(pki: Pki, digest: str = "sha256") -> messages.PkiMessage:
    """A PKCSReq as a client signs it, read back as the server reads it."""
    attrs = [
        asn1_cms.CMSAttribute({"type": oid, "values": [value]})
        for oid, value in [
            (messages.OID_MESSAGE_TYPE, core.PrintableString("19")),
            (messages.OID_TRANSACTION_ID, core.PrintableString("TX 0123456789abcdef")),
            (messages.OID_SENDER_NONCE, core.OctetString(b"\x00client nonce\xff")),
        ]
    ]
    der = cms.sign(b"envelope", attrs, pki.client.cert, pki.client.key, digest, [pki.client.cert])
    return messages.read_message(der)


def attribute_values(signer_info: asn1_cms.SignerInfo) -> dict[str, bytes]:
    """Each signed attribute's single value, as DER, by OID."""
    values = {}
    for attr in signer_info["signed_attrs"]:
        assert len(attr["values"]) == 1
        values[attr["type"].dotted] = attr["values"][0].dump()
    return values


def check_signed(der: bytes, signer: x509.Certificate, digest: str = "sha256") -> dict[str, bytes]:
    """What every SignedData from `sign` must be: canonical DER, one signer named by issuer and
    serial, rsaEncryption, and a signature over the signed attributes as a SET."""
    info = asn1_cms.ContentInfo.load(der, strict=True)
    assert info.dump(force=True) == der  # re-encoded by asn1crypto: already canonical DER
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    assert signed["version"].native == "v1"
    assert [a["algorithm"].native for a in signed["digest_algorithms"]] == [digest]
    assert [c.chosen.dump() for c in signed["certificates"]] == [signer.public_bytes(DER)]
    (signer_info,) = signed["signer_infos"]
    sid = signer_info["sid"]
    assert sid.name == "issuer_and_serial_number"
    assert sid.chosen["issuer"].dump() == signer.issuer.public_bytes()
    assert sid.chosen["serial_number"].native == signer.serial_number
    assert signer_info["digest_algorithm"]["algorithm"].native == digest
    assert signer_info["signature_algorithm"]["algorithm"].dotted == RSA_ENCRYPTION
    assert signer_info["signature_algorithm"]["parameters"].dump() == core.Null().dump()
    values = attribute_values(signer_info)
    assert values[CONTENT_TYPE] == asn1_cms.ContentType("data").dump()
    content = signed["encap_content_info"]["content"]
    hashed = hashlib.new(digest, content.native if content else b"").digest()
    assert values[MESSAGE_DIGEST] == core.OctetString(hashed).dump()
    carried = signer_info["signed_attrs"].dump()
    assert carried[0] == 0xA0  # [0] IMPLICIT in the SignerInfo, signed as a SET (RFC 5652 5.4)
    public_key = signer.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    hash_alg = cms.HASHES[digest]()
    signature = signer_info["signature"].native
    public_key.verify(signature, b"\x31" + carried[1:], asym_padding.PKCS1v15(), hash_alg)
    return values


def open_envelope(der: bytes, recipient: Party, cipher: str) -> bytes:
    """Decrypt an EnvelopedData by hand, checking the fields on the way."""
    info = asn1_cms.ContentInfo.load(der, strict=True)
    assert info.dump(force=True) == der
    assert info["content_type"].native == "enveloped_data"
    enveloped = info["content"]
    assert enveloped["version"].native == "v0"
    (choice,) = enveloped["recipient_infos"]
    ktri = choice.chosen
    assert choice.name == "ktri" and ktri["version"].native == "v0"
    rid = ktri["rid"].chosen
    assert rid["issuer"].dump() == recipient.cert.issuer.public_bytes()
    assert rid["serial_number"].native == recipient.cert.serial_number
    assert ktri["key_encryption_algorithm"]["algorithm"].dotted == RSA_ENCRYPTION
    key = recipient.key.decrypt(ktri["encrypted_key"].native, asym_padding.PKCS1v15())
    content_info = enveloped["encrypted_content_info"]
    assert content_info["content_type"].native == "data"
    algorithm = content_info["content_encryption_algorithm"]
    assert algorithm["algorithm"].native == cipher
    block = TripleDES(key) if cipher == "tripledes_3key" else algorithms.AES(key)
    decryptor = Cipher(block, modes.CBC(algorithm.encryption_iv)).decryptor()
    padded = decryptor.update(content_info["encrypted_content"].native) + decryptor.finalize()
    unpadder = padding.PKCS7(block.block_size).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def check_degenerate(der: bytes, certificates: list[x509.Certificate]) -> asn1_cms.SignedData:
    info = asn1_cms.ContentInfo.load(der, strict=True)
    assert info.dump(force=True) == der
    signed = info["content"]
    assert info["content_type"].native == "signed_data" and signed["version"].native == "v1"
    assert len(signed["digest_algorithms"]) == 0 and len(signed["signer_infos"]) == 0
    assert signed["encap_content_info"]["content_type"].native == "data"
    assert signed["encap_content_info"]["content"].native is None
    found = sorted(c.chosen.dump() for c in signed["certificates"])
    assert found == sorted(c.public_bytes(DER) for c in certificates)
    return signed


def openssl_ok(*args: str, input: bytes | None = None) -> str:
    result = openssl(*args, input=input)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode(errors="replace")


@pytest.mark.parametrize(
    ("asked", "used"), [("aes256_cbc", "aes256_cbc"), ("des", "tripledes_3key")]
)
def test_success_cert_rep(pki: Pki, tmp_path: Path, asked: str, used: str) -> None:
    req = request(pki)
    der = messages.cert_rep(req, Reply.success([pki.issued]), pki.responder, pki.client.cert, asked)

    values = check_signed(der, pki.ra.cert)
    assert values[messages.OID_MESSAGE_TYPE] == core.PrintableString("3").dump()
    assert values[messages.OID_PKI_STATUS] == core.PrintableString("0").dump()
    assert values[messages.OID_TRANSACTION_ID] == req.transaction_id.dump()  # byte for byte
    assert values[messages.OID_RECIPIENT_NONCE] == core.OctetString(req.sender_nonce).dump()
    nonce = core.OctetString.load(values[messages.OID_SENDER_NONCE]).native
    assert len(nonce) == 16 and nonce != req.sender_nonce
    assert messages.OID_FAIL_INFO not in values
    envelope = asn1_cms.ContentInfo.load(der)["content"]["encap_content_info"]["content"].native
    inner = open_envelope(envelope, pki.client, used)
    check_degenerate(inner, [pki.issued])

    printed = openssl_ok("cms", "-cmsout", "-print", "-inform", "DER", input=der)
    signer_part = printed.split("signatureAlgorithm:")[1]
    assert "rsaEncryption (1.2.840.113549.1.1.1)" in signer_part.splitlines()[1]
    cert, key = pki.client.pem_files(tmp_path)
    verified = openssl("cms", "-verify", "-noverify", "-inform", "DER", "-binary", input=der)
    assert verified.returncode == 0 and verified.stdout == envelope, verified.stderr.decode()
    opened = openssl(
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-recip",
        cert,
        "-inkey",
        key,
        "-binary",
        input=envelope,
    )
    assert opened.returncode == 0 and opened.stdout == inner, opened.stderr.decode()
    listed = openssl_ok("pkcs7", "-print_certs", "-inform", "DER", input=inner)
    assert "CN = issued" in listed


@pytest.mark.parametrize(
    ("reply", "status", "fail_info", "text"),
    [
        (Reply.pending(), "3", None, None),
        (Reply.failure("4", "refusé: " + "x" * 300), "2", "4", "refusé: " + "x" * 192),
        (Reply.failure("0", ""), "2", "0", None),
    ],
)
@pytest.mark.parametrize("digest", ["sha256", "sha512"])
def test_pending_and_failure_cert_rep(
    pki: Pki,
    tmp_path: Path,
    reply: Reply,
    status: str,
    fail_info: str | None,
    text: str | None,
    digest: str,
) -> None:
    req = request(pki, digest)
    der = messages.cert_rep(req, reply, pki.responder, pki.client.cert, "aes256_cbc")

    values = check_signed(der, pki.ra.cert, digest)
    # An eContent that is there and empty, as micromdm's scepserver sends: OpenSSL (certmonger)
    # refuses to verify a SignedData without one ("no content").
    encap = asn1_cms.ContentInfo.load(der)["content"]["encap_content_info"]
    assert encap["content"].dump() == core.OctetString(b"", explicit=0).dump()
    assert values[messages.OID_MESSAGE_TYPE] == core.PrintableString("3").dump()
    assert values[messages.OID_PKI_STATUS] == core.PrintableString(status).dump()
    assert values[messages.OID_TRANSACTION_ID] == req.transaction_id.dump()
    assert values[messages.OID_RECIPIENT_NONCE] == core.OctetString(req.sender_nonce).dump()
    if fail_info is None:
        assert messages.OID_FAIL_INFO not in values
    else:
        assert values[messages.OID_FAIL_INFO] == core.PrintableString(fail_info).dump()
    if text is None:
        assert messages.OID_FAIL_INFO_TEXT not in values
    else:
        assert values[messages.OID_FAIL_INFO_TEXT] == core.UTF8String(text).dump()

    # Verified as certmonger's scep-submit does (PKCS7_verify, no detached content given):
    # the signed content is the empty eContent itself.
    args = ["cms", "-verify", "-noverify", "-inform", "DER", "-binary"]
    assert openssl_ok(*args, input=der) == ""


def test_get_ca_cert_degenerate(pki: Pki) -> None:
    der = cms.degenerate(pki.responder.ca_certificates)

    signed = check_degenerate(der, [pki.ra.cert, pki.ca.cert])
    assert not signed["crls"]
    listed = openssl_ok("pkcs7", "-print_certs", "-inform", "DER", input=der)
    assert "CN = Unit SCEP RA" in listed and "CN = Unit SCEP CA" in listed


def test_degenerate_with_crl(pki: Pki) -> None:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ca.cert.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .sign(pki.ca.key, hashes.SHA256())
    ).public_bytes(DER)
    der = cms.degenerate([], [crl])

    signed = check_degenerate(der, [])
    assert [c.chosen.dump() for c in signed["crls"]] == [crl]
    assert "Certificate Revocation List" in openssl_ok(
        "pkcs7", "-print_certs", "-text", "-inform", "DER", input=der
    )


def test_get_next_ca_cert_sign(pki: Pki) -> None:
    inner = cms.degenerate([pki.ra.cert, pki.ca.cert])
    der = cms.sign(inner, [], pki.ra.cert, pki.ra.key, "sha256", [pki.ra.cert])

    check_signed(der, pki.ra.cert)
    verified = openssl("cms", "-verify", "-noverify", "-inform", "DER", "-binary", input=der)
    assert verified.returncode == 0 and verified.stdout == inner, verified.stderr.decode()
    parsed = cms.load_signed(der)  # and the server's own reader agrees
    cms.verify(parsed, cms.signer_certificate(parsed))
    assert parsed.content == inner
