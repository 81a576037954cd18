"""The OCSP responder answers for a CA made a moment before a request, even when its index
of CAs was read just before the CA was made (it reads again at most every 50 ms)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tessera.domains.issuance import ca_row
from tessera.domains.ocsp import responder as responder_module
from tessera.domains.ocsp.responder import UNAUTHORIZED, Answer, Request, Responder
from tessera.storage.db import session_factory
from tessera.storage.models import CertificateAuthority
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.ocsp import OCSPRepository
from tests.e2e.helpers import self_signed_ca


class RecordingSigners:
    """Stands for the signer factory: records which CA it is asked to sign for."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def load(self, ca_id: int, now: datetime) -> None:
        self.asked.append(ca_id)


def test_a_ca_made_just_after_the_index_was_read_is_answered_for(engine: Engine) -> None:
    sessions = session_factory(engine)
    signers = RecordingSigners()
    responder = _responder(sessions, signers)
    responder.reload_issuers()  # read a moment before the CA is made
    certificate, key, ca_id = _stored_ca(sessions, "Made Just After")
    asked = ocsp.OCSPRequestBuilder().add_certificate(
        _leaf(certificate, key), certificate, hashes.SHA1()
    )
    request = responder.answer_cached(asked.build().public_bytes(serialization.Encoding.DER))
    assert isinstance(request, Request)
    responder.answer(request)
    assert signers.asked == [ca_id]  # found, not taken for a foreign CA


def test_requests_for_unknown_cas_do_not_all_wait_for_a_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow path runs on the event loop's few default threads, shared with the follower
    jobs: requests naming made-up CAs past RELOAD_WAITERS are refused at once, not queued
    behind a read (before, every one waited its turn, so a flood held every thread)."""
    monkeypatch.setattr(responder_module, "RELOAD_WAITERS", 1, raising=False)
    responder = _responder(session_factory(engine))
    reading, release = threading.Event(), threading.Event()

    def slow_read() -> None:  # a slow database: the first request's read takes its time
        reading.set()
        release.wait()

    monkeypatch.setattr(responder, "_read_issuers", slow_read)
    first = threading.Thread(target=responder.answer, args=(_unknown(responder),))
    first.start()
    assert reading.wait(30)
    answered: list[Answer] = []
    second = threading.Thread(target=lambda: answered.append(responder.answer(_unknown(responder))))
    second.start()
    second.join(30)  # a hang detector: before the fix it waits until the read is released
    answered_during_the_read = list(answered)
    release.set()
    first.join()
    second.join()
    assert [a.der for a in answered_during_the_read] == [UNAUTHORIZED]


def _responder(sessions: sessionmaker[Session], signers: object = None) -> Responder:
    clock = lambda: datetime.now(UTC)  # noqa: E731
    factory = signers or RecordingSigners()
    return Responder(sessions, factory, clock, timedelta(hours=1), 100)  # type: ignore[arg-type]


def _stored_ca(
    sessions: sessionmaker[Session], name: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, int]:
    """A CA with its key (sealed, as stored) in an organization of its own."""
    certificate, key = self_signed_ca(name)
    with sessions.begin() as session:
        row = ca_row(certificate, "sealed", name, None)
        row.org_id = Repositories(session, 0).organizations.add(name).id
        session.add(row)
        session.flush()
        return certificate, key, row.id


def _unknown(responder: Responder) -> Request:
    """A request naming a CA the responder has never seen."""
    certificate, key = self_signed_ca("Made Up")
    asked = ocsp.OCSPRequestBuilder().add_certificate(
        _leaf(certificate, key), certificate, hashes.SHA1()
    )
    request = responder.answer_cached(asked.build().public_bytes(serialization.Encoding.DER))
    assert isinstance(request, Request)
    return request


def _leaf(issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(issuer_key, hashes.SHA256())
    )


def test_a_read_that_began_earlier_does_not_undo_a_later_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of the CA index that began before a CA was revoked for a key compromise, and
    ended after the follower's read that saw it, put back the CA as uncompromised: what it
    issued was answered `good` until the next read (reads now run one at a time)."""
    sessions = session_factory(engine)
    responder = _responder(sessions)
    _, _, ca_id = _stored_ca(sessions, "Compromised Later")
    read, carry_on = threading.Event(), threading.Event()
    all_cas = OCSPRepository.all_cas

    def held_once(repository: OCSPRepository) -> object:
        rows = all_cas(repository)
        if not read.is_set():  # the first read has its rows, and is held before it ends
            read.set()
            carry_on.wait()
        return rows

    monkeypatch.setattr(OCSPRepository, "all_cas", held_once)
    earlier = threading.Thread(target=responder.reload_issuers)
    earlier.start()
    try:
        assert read.wait(30)
        with sessions.begin() as session:
            revoked = session.get(CertificateAuthority, ca_id)
            assert revoked is not None
            revoked.revoked_at = datetime.now(UTC)
            revoked.revocation_reason = "keyCompromise"
        later = threading.Thread(target=responder.reload_issuers)  # the follower's, say
        later.start()
        later.join(2)  # before the fix it ends here, ahead of the earlier read; now it waits
    finally:
        carry_on.set()
    earlier.join()
    later.join()
    assert responder._served[ca_id].compromised_at is not None
