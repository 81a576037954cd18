"""EC requesters (RFC 8894 section 3.1) on a profile with dynamic, one-time challenges: the
request goes to the RA by key transport, and the answer is encrypted with the one-time
password the request's CSR proved, read back from the sealed stored CSR for a poll. Opened
and verified by `openssl cms -decrypt -pwri_password` and `openssl verify` (test_scep_pwri's
`opened`), against a real `tessera serve`."""

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509

from tests.e2e.helpers import data, unique
from tests.e2e.test_scep_protocol import (
    API,
    BAD_ALG,
    BAD_REQUEST,
    CERT_POLL,
    FAILURE,
    GET_CERT,
    PENDING,
    RENEWAL_REQ,
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
from tests.e2e.test_scep_pwri import opened, post, pwri_envelope
from tests.e2e.test_scep_requesters import ec_client, ec_signed, named_csr, status_of
from tests.support import Server


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP PWRI Dynamic Base") as made:
        yield made


def dynamic(api: httpx.Client, scep: Scep, **settings: object) -> Scep:
    """A dynamic-challenge profile on a CA of its own, as a `Scep` (its path, CA and RA)."""
    ca_id = rsa_ca(api, unique("SCEP PWRI Dynamic Root"))
    path = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", **settings)
    ca, ra = split(ca_certificates(scep.http, path))
    return dataclasses.replace(scep, ca_id=ca_id, ca=ca, ra=ra, path=path, challenge="")


def one_time(api: httpx.Client, scep: Scep) -> str:
    return str(data(api.get(f"{API}/scep/challenge/{scep.ca_id}"))["challenge"])


def test_an_ec_requester_enrolls_with_its_one_time_password(
    scep: Scep, api: httpx.Client, workdir: Path
) -> None:
    """Key transport to the RA, the one-time challenge in the CSR: the SUCCESS is encrypted
    with that challenge, and OpenSSL opens it and verifies the certificate. The same request
    sent again (a retry after a lost answer) gets the same certificate, encrypted with the
    same password although it is spent now; the spent password enrolls nobody else."""
    on = dynamic(api, scep, auto_approve=True)
    challenge, cn = one_time(api, on), unique("dyn-ec")
    key, cert = ec_client(cn)
    sent = ec_signed(key, cert, on.ra, named_csr(key, cn, challenge=challenge))
    issued = opened(workdir, on, post(on, sent.der), challenge)
    assert issued.subject.rfc4514_string() == f"CN={cn}"
    assert issued.public_key() == key.public_key()
    assert opened(workdir, on, post(on, sent.der), challenge) == issued
    assert len(issued_named(api, cn)) == 1
    rsa_device = new_client()
    again = pki_message(rsa_device, on.ra, csr_der(rsa_device, unique("dyn-rsa"), challenge))
    reply = read_reply(on.post(again), rsa_device, on.ra)
    assert (reply.status, reply.fail_info) == (FAILURE, BAD_REQUEST)


def test_a_queued_ec_request_is_answered_with_its_stored_password(
    scep: Scep, api: httpx.Client, workdir: Path
) -> None:
    """PENDING, then an admin approves: the CertPoll's answer is encrypted with the password
    read back from the request's sealed CSR, as is the PKCSReq sent again (scepclient polls
    so)."""
    on = dynamic(api, scep, auto_approve=False)
    challenge, cn = one_time(api, on), unique("dyn-queued")
    key, cert = ec_client(cn)
    sent = ec_signed(key, cert, on.ra, named_csr(key, cn, challenge=challenge))
    assert status_of(on.post(sent)) == (PENDING, None)
    poll_payload = issuer_and_subject(on.ca.subject, cn)
    poll = ec_signed(
        key, cert, on.ra, poll_payload, kind=CERT_POLL, transaction_id=sent.transaction_id
    )
    assert status_of(on.post(poll)) == (PENDING, None)
    rows = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))
    row = next(r for r in rows if r["transaction_id"] == sent.transaction_id)
    data(api.post(f"{API}/scep/{row['id']}/approve"))
    issued = opened(workdir, on, post(on, poll.der), challenge)
    assert issued.subject.rfc4514_string() == f"CN={cn}"
    assert issued.public_key() == key.public_key()
    assert opened(workdir, on, post(on, sent.der), challenge) == issued


def test_bad_challenges_fail_as_for_rsa_and_write_nothing(scep: Scep, api: httpx.Client) -> None:
    """No challenge, a wrong one, a spent one: badRequest, as an RSA requester gets. On a
    profile that would queue such a request, the queued request could never be answered to
    an EC key (it proved no password): badAlg. Nothing written either way, and a refused
    request leaves a good challenge unspent."""
    strict = dynamic(api, scep, auto_approve=True)
    queueing = dynamic(api, scep, auto_approve=False, queue_without_challenge=True)
    spent = one_time(api, strict)
    rsa_device = new_client()
    sent = pki_message(rsa_device, strict.ra, csr_der(rsa_device, unique("spender"), spent))
    assert read_reply(strict.post(sent), rsa_device, strict.ra).status == SUCCESS
    before, cn = scep_requests(api), unique("dyn-bad")
    key, cert = ec_client(cn)
    for on, expected in ((strict, BAD_REQUEST), (queueing, BAD_ALG)):
        for password in (None, "wrong", spent):
            ec_sent = ec_signed(key, cert, on.ra, named_csr(key, cn, challenge=password))
            assert status_of(on.post(ec_sent)) == (FAILURE, expected), (on.path, password)
            if on is strict:
                rsa = new_client()
                sent = pki_message(rsa, on.ra, csr_der(rsa, cn, password))
                reply = read_reply(on.post(sent), rsa, on.ra)
                assert (reply.status, reply.fail_info) == (FAILURE, expected), password
    assert scep_requests(api) == before
    assert issued_named(api, cn) == []


def test_what_proves_no_password_is_refused_first(
    scep: Scep, api: httpx.Client, workdir: Path
) -> None:
    """A password-based envelope (the server cannot tell which one-time password to derive
    with), a RenewalReq and a GetCert (neither carries a challenge) from an EC signer on a
    dynamic profile: badAlg, nothing written, the challenge still good afterwards."""
    on = dynamic(api, scep, auto_approve=True)
    challenge, cn = one_time(api, on), unique("dyn-unproven")
    key, cert = ec_client(cn)
    payload = named_csr(key, cn, challenge=challenge)
    envelope = pwri_envelope(workdir, payload, challenge)
    someone = asn1_cms.IssuerAndSerialNumber(
        {"issuer": asn1_cms.Name.load(on.ca.subject.public_bytes()), "serial_number": 1}
    ).dump()
    before = scep_requests(api)
    for sent in (
        ec_signed(key, cert, on.ra, b"", envelope=envelope),
        ec_signed(key, cert, on.ra, payload, kind=RENEWAL_REQ),
        ec_signed(key, cert, on.ra, someone, kind=GET_CERT),
    ):
        assert status_of(on.post(sent)) == (FAILURE, BAD_ALG)
    assert scep_requests(api) == before
    assert issued_named(api, cn) == []
    sent = ec_signed(key, cert, on.ra, payload)
    issued = opened(workdir, on, post(on, sent.der), challenge)
    assert isinstance(issued, x509.Certificate)
