"""Bulk renewal signs every renewal before it writes anything, on both backends: a renewal of
a server-held key makes a new key, and a transaction's first write holds the other writers up
until it commits (SQLite: the database's write lock; PostgreSQL: the audit chain's head)."""

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from tessera.core.authority import Authority, random_serial
from tessera.core.keystore import KeyEncryptor
from tessera.core.names import SubjectFields
from tessera.domains.actor import system_actor
from tessera.domains.audit import wiring
from tessera.domains.cas.service import CAService, NewCA
from tessera.domains.certificates import service as certificates
from tessera.domains.certificates.service import CertificateService, NewCertificate
from tessera.domains.issuance import Issuance, PublicationBase
from tessera.storage import models
from tessera.storage.db import session_factory
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.serials import SerialPool

WRITES = ("INSERT", "UPDATE", "DELETE", "SAVEPOINT")


def test_renewals_are_all_signed_before_the_first_write(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    keys, serials = KeyEncryptor([KeyEncryptor.new_kek()]), SerialPool(sessions, random_serial)

    def service(session: Any, org_id: int) -> CertificateService:
        actor = system_actor(org_id)
        issuance = Issuance(
            Repositories(session, org_id),
            Authority(),
            keys,
            PublicationBase("http://127.0.0.1:8080"),
            actor,
            serials,
        )
        return CertificateService(issuance, datetime.now(UTC))

    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("bulk").id
        issuer = service(session, org)._issuance
        ca = CAService(issuer).create(
            NewCA(SubjectFields(common_name="Bulk Root"), "root", "EC", 256, 365)
        )
        held = [
            service(session, org).issue(
                NewCertificate(ca.id, SubjectFields(common_name=f"renew-{n}.example"), [])
            )
            for n in range(3)
        ]
    serials.refill()  # as the server's job does: no serial is claimed in the renewal's unit

    log: list[str] = []
    real_generate = certificates.generate_private_key

    def generate(spec: Any) -> Any:
        log.append("new key")
        return real_generate(spec)

    def statement(*args: Any) -> None:
        if args[2].lstrip().upper().startswith(WRITES):
            log.append("write")

    monkeypatch.setattr(certificates, "generate_private_key", generate)
    event.listen(engine, "before_cursor_execute", statement)
    ids = [held[0].id, 999_999, held[1].id, held[2].id]
    try:
        with sessions.begin() as session:
            result = service(session, org).bulk_renew(ids, None)
    finally:
        event.remove(engine, "before_cursor_execute", statement)

    assert log[:3] == ["new key"] * 3 and "new key" not in log[3:], log
    assert result.success == [held[0].id, held[1].id, held[2].id]
    assert result.failed == [999_999]
    with sessions.begin() as session:
        for pair, old in zip(result.renewed, held, strict=True):
            new = session.get(models.Certificate, pair["new_id"])
            assert pair["id"] == old.id and new is not None
            assert new.common_name == old.common_name and new.serial_number != old.serial_number
            assert new.encrypted_private_key is not None
        renew_events = session.execute(
            select(models.AuditLog.resource_id, models.AuditLog.details)
            .where(models.AuditLog.action == "certificate.renew")
            .order_by(models.AuditLog.id)
        )
        expected = [(str(p["id"]), {"renewed_by": p["new_id"]}) for p in result.renewed]
        assert [tuple(event) for event in renew_events] == expected
