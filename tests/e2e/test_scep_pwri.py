"""SCEP for requesters whose key cannot encrypt (RFC 8894 section 3.1): the pkcsPKIEnvelope
protected with the challenge password (PasswordRecipientInfo, RFC 3211), and the answer to
an EC key encrypted the same way. The envelopes are made and opened by `openssl cms
-pwri_password`, against a real `tessera serve`; the ECDSA signing layer is
test_scep_requesters.py's."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tessera.protocols.scep import operations
from tests.e2e.helpers import data, unique
from tests.e2e.test_scep_openssl import ok, post, printed, verified
from tests.e2e.test_scep_protocol import (
    API,
    BAD_ALG,
    BAD_MESSAGE_CHECK,
    CERT_POLL,
    FAILURE,
    PENDING,
    SUCCESS,
    Scep,
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
from tests.e2e.test_scep_requesters import ec_client, ec_signed, named_csr, status_of
from tests.support import Server
from tests.tools import openssl_verify, pem_blocks

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP PWRI Root") as made:
        yield made


def pwri_envelope(workdir: Path, payload: bytes, password: str, cipher: str = "-aes256") -> bytes:
    """`openssl cms -encrypt -pwri_password`: PBKDF2 and id-alg-PWRI-KEK, as OpenSSL writes
    them (HMAC-SHA1, 2048 iterations, the content cipher for the key wrap too)."""
    plain = workdir / "payload.der"
    plain.write_bytes(payload)
    args = ["cms", "-encrypt", "-binary", "-in", str(plain), "-outform", "DER", cipher]
    return ok(*args, "-pwri_password", password)


def opened(workdir: Path, scep: Scep, answer: bytes, password: str) -> x509.Certificate:
    """The SUCCESS CertRep as an OpenSSL client reads it: the RA's signature verified, the
    envelope opened with the password, the one certificate checked against the CA."""
    ca = workdir / "ca.pem"
    ca.write_bytes(scep.ca.public_bytes(PEM))
    envelope = verified(answer, str(ca))
    assert "d.pwri:" in printed(envelope), "the answer is not password-based"
    inner = ok(
        "cms", "-decrypt", "-inform", "DER", "-binary", "-pwri_password", password,
        input=envelope,
    )  # fmt: skip
    listed = ok("pkcs7", "-inform", "DER", "-print_certs", input=inner).decode()
    (issued,) = pem_blocks(listed)
    verdict = openssl_verify(workdir, issued, [scep.ca.public_bytes(PEM).decode()])
    assert "OK" in verdict, verdict
    return x509.load_pem_x509_certificate(issued.encode())


def test_an_ec_requester_enrolls_with_a_password_envelope(scep: Scep, workdir: Path) -> None:
    """RFC 8894 3.1 end to end: an EC P-256 requester signs with ECDSA and protects its CSR
    with the challenge password; the certificate comes back encrypted with that password
    and OpenSSL opens and verifies it."""
    cn = unique("pwri-ec")
    key, cert = ec_client(cn)
    envelope = pwri_envelope(workdir, named_csr(key, cn, challenge=scep.challenge), scep.challenge)
    answer = post(scep, ec_signed(key, cert, scep.ra, b"", envelope=envelope).der)
    issued = opened(workdir, scep, answer, scep.challenge)
    assert issued.subject.rfc4514_string() == f"CN={cn}"
    assert issued.public_key() == key.public_key()


def test_an_ec_requester_with_key_transport_gets_a_password_answer(
    scep: Scep, workdir: Path
) -> None:
    """The request encrypted to the RA (RSA) as usual; only the answer, for a key that cannot
    be encrypted to, uses the challenge password."""
    cn = unique("ktri-ec")
    key, cert = ec_client(cn)
    sent = ec_signed(key, cert, scep.ra, named_csr(key, cn, challenge=scep.challenge))
    issued = opened(workdir, scep, post(scep, sent.der), scep.challenge)
    assert issued.public_key() == key.public_key()


def test_an_rsa_requester_may_send_a_password_envelope(scep: Scep, workdir: Path) -> None:
    """The envelope opens with the password; the answer goes to the RSA key as before."""
    client, cn = new_client(), unique("pwri-rsa")
    envelope = pwri_envelope(
        workdir, csr_der(client, cn, scep.challenge), scep.challenge, "-aes128"
    )
    sent = pki_message(client, scep.ra, b"", envelope=envelope)
    reply = read_reply(scep.post(sent), client, scep.ra)
    assert reply.status == SUCCESS, reply
    assert reply.certificates[0].subject.rfc4514_string() == f"CN={cn}"


def test_a_queued_ec_request_is_polled_for_with_the_password(
    scep: Scep, api: httpx.Client, workdir: Path
) -> None:
    """PENDING is not encrypted; the certificate an admin approved reaches the EC requester
    by a poll, password-based like its request, encrypted with the same password."""
    path = profile(api, scep, auto_approve=False)
    _, ra = split(ca_certificates(scep.http, path))
    cn = unique("pwri-queued")
    key, cert = ec_client(cn)
    envelope = pwri_envelope(workdir, named_csr(key, cn, challenge=scep.challenge), scep.challenge)
    sent = ec_signed(key, cert, ra, b"", envelope=envelope)
    assert status_of(scep.post(sent, path)) == (PENDING, None)
    rows = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))
    row = next(r for r in rows if r["transaction_id"] == sent.transaction_id)
    data(api.post(f"{API}/scep/{row['id']}/approve"))
    poll_envelope = pwri_envelope(workdir, issuer_and_subject(scep.ca.subject, cn), scep.challenge)
    poll = ec_signed(
        key, cert, ra, b"", poll_envelope, kind=CERT_POLL, transaction_id=sent.transaction_id
    )
    issued = opened(workdir, scep, post(scep, poll.der, path), scep.challenge)
    assert issued.subject.rfc4514_string() == f"CN={cn}"


def _pwri(envelope: bytes) -> tuple[asn1_cms.ContentInfo, asn1_cms.PasswordRecipientInfo]:
    info = asn1_cms.ContentInfo.load(envelope)
    return info, info["content"]["recipient_infos"][0].chosen


def _kdf(info: asn1_cms.PasswordRecipientInfo, **changes: object) -> None:
    params = dict(info["key_derivation_algorithm"]["parameters"].native)
    params.update(changes)
    params["salt"] = algos.Pbkdf2Salt(name="specified", value=params["salt"])
    info["key_derivation_algorithm"] = {"algorithm": "pbkdf2", "parameters": params}


def _wrap_with(info: asn1_cms.PasswordRecipientInfo, algorithm: str, iv_bytes: int) -> None:
    kek = algos.EncryptionAlgorithm(
        {"algorithm": algorithm, "parameters": core.OctetString(os.urandom(iv_bytes))}
    )
    info["key_encryption_algorithm"] = {
        "algorithm": "1.2.840.113549.1.9.16.3.9",
        "parameters": core.Any.load(kek.dump()),
    }


def _changed(envelope: bytes, change: Callable[[asn1_cms.PasswordRecipientInfo], None]) -> bytes:
    info, pwri = _pwri(envelope)
    change(pwri)
    return info.dump(force=True)


BAD_ENVELOPES: dict[str, tuple[str, Callable[[asn1_cms.PasswordRecipientInfo], None]]] = {
    "scrypt": (
        BAD_ALG,
        lambda p: p.__setitem__(
            "key_derivation_algorithm",
            {"algorithm": "1.3.6.1.4.1.11591.4.11", "parameters": core.Null()},
        ),
    ),
    "no key derivation": (BAD_ALG, lambda p: p.__setitem__("key_derivation_algorithm", None)),
    "md5 prf": (BAD_ALG, lambda p: _kdf(p, prf={"algorithm": "1.2.840.113549.2.6"})),
    "too many iterations": (BAD_ALG, lambda p: _kdf(p, iteration_count=10_000_000)),
    "aes key wrap": (
        BAD_ALG,
        lambda p: p.__setitem__(
            "key_encryption_algorithm", {"algorithm": "2.16.840.1.101.3.4.1.45"}
        ),
    ),
    "ofb key wrap": (BAD_ALG, lambda p: _wrap_with(p, "aes256_ofb", 16)),
    "single des key wrap": (BAD_ALG, lambda p: _wrap_with(p, "des", 8)),
    "truncated key": (
        BAD_MESSAGE_CHECK,
        lambda p: p.__setitem__("encrypted_key", p["encrypted_key"].native[:16]),
    ),
    "one block": (
        BAD_MESSAGE_CHECK,
        lambda p: p.__setitem__("encrypted_key", p["encrypted_key"].native[:-16]),
    ),
    "other wrap iv": (BAD_MESSAGE_CHECK, lambda p: _wrap_with(p, "aes256_cbc", 16)),
}


def test_bad_password_envelopes_are_refused_and_write_nothing(
    scep: Scep, api: httpx.Client, workdir: Path
) -> None:
    """A wrong password, a wrapped key cut short or not what the IV unwraps: badMessageCheck,
    as an envelope our key does not open. A key derivation, PRF or key wrap we do not do
    (or do only so far: iterations are bounded): badAlg. No request row, no certificate."""
    before = scep_requests(api)
    cn = unique("pwri-refused")
    key, cert = ec_client(cn)
    payload = named_csr(key, cn, challenge=scep.challenge)
    good = pwri_envelope(workdir, payload, scep.challenge)
    cases = {name: (fail, _changed(good, change)) for name, (fail, change) in BAD_ENVELOPES.items()}
    cases["wrong password"] = (BAD_MESSAGE_CHECK, pwri_envelope(workdir, payload, "wrong"))
    cases["3des content, des wrap"] = (
        BAD_ALG,
        _changed(
            pwri_envelope(workdir, payload, scep.challenge, "-des3"),
            BAD_ENVELOPES["single des key wrap"][1],
        ),
    )
    for name, (fail_info, envelope) in cases.items():
        sent = ec_signed(key, cert, scep.ra, b"", envelope=envelope)
        assert status_of(scep.post(sent)) == (FAILURE, fail_info), name
    assert scep_requests(api) == before
    assert issued_named(api, cn) == []
    sent = ec_signed(key, cert, scep.ra, b"", envelope=good)  # the same, unharmed, is good
    opened(workdir, scep, post(scep, sent.der), scep.challenge)


def test_a_dynamic_profile_cannot_open_password_envelopes(
    scep: Scep, api: httpx.Client, workdir: Path
) -> None:
    """One-time passwords are kept as digests only: a password-based envelope cannot be
    opened (badAlg: key transport to the RA is what works), the challenge stays unspent."""
    ca_id = rsa_ca(api, unique("SCEP PWRI Dynamic Root"))
    path = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", auto_approve=True)
    _, ra = split(ca_certificates(scep.http, path))
    challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    client, cn = new_client(), unique("pwri-dynamic")
    envelope = pwri_envelope(workdir, csr_der(client, cn, challenge), challenge)
    sent = pki_message(client, ra, b"", envelope=envelope)
    reply = read_reply(scep.post(sent, path), client, ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_ALG)
    again = pki_message(client, ra, csr_der(client, cn, challenge))
    assert read_reply(scep.post(again, path), client, ra).status == SUCCESS


def test_caps_advertise_nothing_new(scep: Scep) -> None:
    """RFC 8894 defines no capability for password-based envelopes."""
    caps = scep.http.get(f"{scep.path}?operation=GetCACaps").text.split()
    assert sorted(caps) == sorted([*operations.CAPABILITIES, "SCEPStandard"])
