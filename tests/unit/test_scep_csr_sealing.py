"""SCEP CSRs at rest (migration 0017): requests stored before it keep their CSR through the
column's rename and are sealed under the KEK when the server starts, once, on both backends."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from tessera.core.keystore import KeyEncryptor
from tessera.domains.scep.sealing import seal_stored_csrs
from tessera.storage.db import session_factory
from tessera.storage.models_scep import ScepProfile, ScepRequest
from tessera.storage.repositories import Repositories
from tests.support import alembic

CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBfake\n-----END CERTIFICATE REQUEST-----\n"
LEGACY_REQUEST = (
    "INSERT INTO scep_requests (org_id, profile_id, transaction_id, message_type, status,"
    " subject, common_name, key_digest, csr_pem, challenge, created_at) VALUES (:org,"
    " :profile, :tid, 'PKCSReq', 'pending', 'CN=device', 'device', :digest, :csr, 'valid', :at)"
)


def test_requests_from_before_0017_are_sealed_at_start(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0016")
    sessions = session_factory(bare_engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("migrated").id
        profile = ScepProfile(org_id=org, slug="default", created_at=now, updated_at=now)
        session.add(profile)
        session.flush()
        for index in range(3):
            params = {"org": org, "profile": profile.id, "tid": f"t{index}", "at": now}
            session.execute(text(LEGACY_REQUEST), {**params, "digest": "d" * 64, "csr": CSR})
    alembic(bare_engine, "upgrade", "head")
    keys = KeyEncryptor([KeyEncryptor.new_kek()])
    with sessions.begin() as session:
        assert seal_stored_csrs(session, keys) == 3
    with sessions.begin() as session:
        stored = session.query(ScepRequest).order_by(ScepRequest.id).all()
        assert [r.transaction_id for r in stored] == ["t0", "t1", "t2"]
        assert all(r.encrypted_csr.startswith("gAAAAA") for r in stored)
        assert {keys.unseal(r.encrypted_csr).decode() for r in stored} == {CSR}
        assert seal_stored_csrs(session, keys) == 0  # once: the next start finds none
    with pytest.raises(RuntimeError, match="sealed under the KEK"):
        alembic(bare_engine, "downgrade", "0016")  # the older code could not read them
    with sessions.begin() as session:
        session.execute(text("DELETE FROM scep_requests"))
    alembic(bare_engine, "downgrade", "0016")
