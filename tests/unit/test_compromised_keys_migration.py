"""Migration 0014 lists the keys of certificates already revoked as compromised, on both
backends: a database upgraded from 0013 knows them as one made at 0014 would."""

from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine

from tessera.core import inspect
from tessera.core.formats import cert_pem
from tessera.storage import models
from tessera.storage.db import session_factory
from tessera.storage.repositories import Repositories
from tests.e2e.helpers import self_signed
from tests.support import alembic


def test_keys_revoked_as_compromised_before_0014_are_listed(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0013")
    shared, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    certs = {
        "compromised-1": (self_signed(shared, "compromised-1"), "keyCompromise"),
        "compromised-2": (self_signed(shared, "compromised-2"), "keyCompromise"),
        "superseded": (self_signed(other, "superseded"), "superseded"),
    }
    sessions = session_factory(bare_engine)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("migrated").id
        for cn, (cert, reason) in certs.items():
            session.add(
                models.Certificate(
                    org_id=org,
                    refid=cn,
                    serial_number=inspect.serial_hex(cert.serial_number),
                    common_name=cn,
                    subject=cert.subject.rfc4514_string(),
                    issuer=cert.issuer.rfc4514_string(),
                    not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                    status="revoked",
                    revoked_at=datetime.now(UTC),
                    revocation_reason=reason,
                    key_algorithm="EC",
                    key_size=256,
                    fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
                    certificate_pem=cert_pem(cert),
                )
            )
    alembic(bare_engine, "upgrade", "head")
    with sessions.begin() as session:
        listed = session.query(models.CompromisedKey).all()
        assert [(k.org_id, k.spki_sha256) for k in listed] == [
            (org, inspect.public_key_sha256(certs["compromised-1"][0]))
        ]
        first = session.get(models.Certificate, listed[0].certificate_id)
        assert first is not None and first.common_name == "compromised-1"
        repository = Repositories(session, org).certificates
        assert repository.key_compromised(listed[0].spki_sha256)
        assert not repository.key_compromised(inspect.public_key_sha256(certs["superseded"][0]))
