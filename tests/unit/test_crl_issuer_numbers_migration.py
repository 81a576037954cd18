"""Migration 0023 keeps the highest CRL number of each issuer (group name and key) as its
state rows hold it, on both backends: a group whose CAs are all deleted after the upgrade
and imported again continues above it."""

import base64
import hashlib
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from tessera.core.inspect import public_key_sha256
from tessera.domains.issuance import ca_row
from tessera.storage import models
from tessera.storage.db import session_factory
from tessera.storage.models_crl import CRLState, IssuerCRLNumber
from tessera.storage.repositories import Repositories
from tests.e2e.helpers import self_signed_ca
from tests.support import alembic

V3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2: the version field of a v3 certificate


def test_the_highest_number_of_each_group_is_kept(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0022")
    key = ec.generate_private_key(ec.SECP256R1())
    older, _ = self_signed_ca("Numbered Root", timedelta(days=365), key=key)
    reissued, _ = self_signed_ca("Numbered Root", timedelta(days=730), key=key)
    other, _ = self_signed_ca("Other Root")
    sessions = session_factory(bare_engine)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("numbered").id
        numbers = {older: 41, reissued: 17, other: 5}
        for cert, last_number in numbers.items():
            row = ca_row(cert, "sealed key", "Numbered Root", None)
            row.org_id = org
            session.add(row)
            session.flush()
            session.add(CRLState(ca_id=row.id, org_id=org, last_number=last_number))
    alembic(bare_engine, "upgrade", "head")
    expected = {
        (hashlib.sha256(cert.subject.public_bytes()).hexdigest(), public_key_sha256(cert), n)
        for cert, n in ((older, 41), (other, 5))
    }
    assert _kept(sessions) == expected
    with sessions.begin() as session:  # the state rows go with their CAs, the numbers stay
        session.execute(delete(CRLState))
        session.execute(delete(models.CertificateAuthority))
    assert _kept(sessions) == expected


def _kept(sessions: sessionmaker[Session]) -> set[tuple[str, str, int]]:
    number = IssuerCRLNumber
    query = select(number.name_sha256, number.spki_sha256, number.last_number)
    with sessions.begin() as session:
        return {(name, spki, last) for name, spki, last in session.execute(query)}


def test_a_ca_this_library_cannot_read_does_not_stop_the_upgrade(bare_engine: Engine) -> None:
    """A CA row whose certificate cryptography refuses with an exception that is no
    ValueError (`InvalidVersion` for a version it does not know) is left out, as one it
    refuses with a ValueError is: it signs no CRL either."""
    alembic(bare_engine, "upgrade", "0022")
    cert, _ = self_signed_ca("Unknown Version Root")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(V3) == 1
    sessions = session_factory(bare_engine)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("unreadable").id
        row = ca_row(cert, "sealed key", "Unknown Version Root", None)
        row.org_id = org
        row.certificate_pem = _pem(der.replace(V3, bytes.fromhex("a003020103")))
        session.add(row)
        session.flush()
        session.add(CRLState(ca_id=row.id, org_id=org, last_number=7))
    alembic(bare_engine, "upgrade", "head")
    assert _kept(sessions) == set()


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----", ""])
