"""Rows a batch of issuances writes together (domains/issuance.write_issued), on both
backends: audit events appended at once, from two organizations interleaved, chain in their
order and verify; certificates inserted in one statement get their own ids."""

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from tessera.domains.actor import system_actor
from tessera.domains.audit import wiring
from tessera.domains.audit.service import AuditService
from tessera.domains.issuance import DEFERRED, deferred
from tessera.storage import models
from tessera.storage.db import session_factory
from tessera.storage.models_audit import AuditChainHead
from tessera.storage.repositories import Repositories

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_events_appended_together_chain_in_order_per_organization(engine: Engine) -> None:
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    with sessions.begin() as session:
        first = Repositories(session, 0).organizations.add("first").id
        second = Repositories(session, 0).organizations.add("second").id
        Repositories(session, first).audit.add(action="before", username="admin")
    orgs = [first, second, first, first, second]
    events: list[dict[str, Any]] = [
        {"org_id": org, "action": f"batch.{n}", "username": "admin", "resource_id": str(n)}
        for n, org in enumerate(orgs)
    ]
    with sessions.begin() as session:
        appended = Repositories(session, first).audit.add_many(events)
        assert [row["action"] for row in appended] == [e["action"] for e in events]
        assert [row["org_id"] for row in appended] == orgs
        Repositories(session, second).audit.add(action="after", username="admin")
    with sessions.begin() as session:
        for org, actions in (
            (first, ["before", "batch.0", "batch.2", "batch.3"]),
            (second, ["batch.1", "batch.4", "after"]),
        ):
            rows = session.scalars(
                select(models.AuditLog)
                .where(models.AuditLog.org_id == org)
                .order_by(models.AuditLog.chain_seq)
            ).all()
            assert [row.action for row in rows] == actions
            assert [row.chain_seq for row in rows] == list(range(1, len(actions) + 1))
            assert [row.chain_prev_id for row in rows] == [None] + [row.id for row in rows[:-1]]
            verdict = AuditService(Repositories(session, org), system_actor(org), NOW).verify()
            assert verdict["valid"] is True and verdict["checked"] == len(actions), verdict


def test_legacy_rows_sealed_by_an_append_leave_the_head_at_the_last_row(engine: Engine) -> None:
    """Rows from before the chain (no position, the head's legacy_max_id) are chained by the
    first append when the server's start has not done it; the head then counts them too."""
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("default").id
        for n in range(3):
            session.add(models.AuditLog(org_id=org, action=f"legacy.{n}", details={}))
        session.flush()
        newest = max(session.scalars(select(models.AuditLog.id)))
        session.add(AuditChainHead(chain_id=org, last_seq=0, legacy_max_id=newest))
    for batch in (["a", "b"], ["c"]):
        with sessions.begin() as session:
            events = [{"action": action, "username": "admin"} for action in batch]
            Repositories(session, org).audit.add_many(events)
    with sessions.begin() as session:
        seqs = session.scalars(select(models.AuditLog.chain_seq).order_by(models.AuditLog.id))
        assert list(seqs) == [1, 2, 3, 4, 5, 6]
        assert session.get(AuditChainHead, org).last_seq == 6  # type: ignore[union-attr]
        verdict = AuditService(Repositories(session, org), system_actor(org), NOW).verify()
        assert verdict["valid"] is True and verdict["checked"] == 6, verdict


def test_start_seals_every_organization_and_repairs_heads_the_old_seal_left_behind(
    engine: Engine,
) -> None:
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    with sessions.begin() as session:
        legacy = [Repositories(session, 0).organizations.add(name).id for name in ("a", "b")]
        for org in legacy:
            for n in range(3):
                session.add(models.AuditLog(org_id=org, action=f"legacy.{n}", details={}))
            session.flush()
            newest = max(session.scalars(select(models.AuditLog.id)))
            session.add(AuditChainHead(chain_id=org, last_seq=0, legacy_max_id=newest))
        stale = Repositories(session, 0).organizations.add("c").id
        Repositories(session, stale).audit.add_many([{"action": f"c.{n}"} for n in range(4)])
    with sessions.begin() as session:  # as the old first-append seal left a head
        session.execute(
            update(AuditChainHead).where(AuditChainHead.chain_id == stale).values(last_seq=3)
        )
    with sessions.begin() as session:
        assert Repositories(session, legacy[0]).audit.settle_chains() == 6
    for org in [*legacy, stale]:
        with sessions.begin() as session:
            Repositories(session, org).audit.add(action="after", username="admin")
        with sessions.begin() as session:
            verdict = AuditService(Repositories(session, org), system_actor(org), NOW).verify()
            assert verdict["valid"] is True and verdict["checked"] in (4, 5), verdict


def test_certificates_inserted_together_get_their_own_ids(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        org = Repositories(session, 0).organizations.add("default").id
        certs = [_certificate(n) for n in range(5)]
        Repositories(session, org).certificates.add_many(certs)
        ids = [cert.id for cert in certs]
        assert len(set(ids)) == 5
    with session_factory(engine)() as session:
        stored = session.execute(select(models.Certificate.id, models.Certificate.serial_number))
        assert dict(stored.all()) == {cert.id: cert.serial_number for cert in certs}


def _certificate(n: int) -> models.Certificate:
    return models.Certificate(
        refid=str(uuid.uuid4()),
        serial_number=f"{n + 1:040x}",
        common_name=f"host-{n}.example.com",
        subject=f"CN=host-{n}.example.com",
        issuer="CN=Batch CA",
        san_text=f"dns:host-{n}.example.com",
        not_before=NOW,
        not_after=NOW + timedelta(days=30),
        key_algorithm="EC",
        key_size=256,
        fingerprint_sha256=f"{n:064x}",
        certificate_pem="-",
    )


def test_deferred_writes_nest() -> None:
    """A deferral made inside another (no path nests them today) hands the enclosing list
    back when it is done, rather than dropping it."""
    info: dict[str, Any] = {}
    with deferred(info) as outer:
        with deferred(info) as inner:
            assert info[DEFERRED] is inner
        assert info[DEFERRED] is outer
    assert DEFERRED not in info
