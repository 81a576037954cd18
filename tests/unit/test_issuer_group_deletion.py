"""Deleting rows of an issuer group while others work on it, on both backends: two
deletions at once (the second waits for the first, then hands its kept CRL entries, and
those the first handed it, to the row that stays, not to the row the first deleted, which
would have dropped them or failed), and a deletion during a CRL publication of the group."""

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from tessera.core.authority import Authority, random_serial
from tessera.core.clock import utc_now
from tessera.core.keystore import KeyEncryptor
from tessera.domains.actor import system_actor
from tessera.domains.audit import wiring
from tessera.domains.cas.service import CAService
from tessera.domains.crl.publisher import CRLPolicy, CRLPublisher
from tessera.domains.issuance import Issuance, PublicationBase
from tessera.storage.db import session_factory
from tessera.storage.models_crl import CRLState, PublishedCRL, RetainedCRLEntry
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.serials import SerialPool
from tests.e2e.helpers import self_signed_ca

KEYS = KeyEncryptor([KeyEncryptor.new_kek()])


def cas(session: Session, org_id: int, sessions: sessionmaker[Session]) -> CAService:
    serials = SerialPool(sessions, random_serial)
    repos = Repositories(session, org_id)
    publication = PublicationBase("http://127.0.0.1:8080")
    issuance = Issuance(repos, Authority(), KEYS, publication, system_actor(org_id), serials)
    return CAService(issuance)


def kept(ca_id: int, org_id: int, serial: str) -> RetainedCRLEntry:
    now = datetime.now(UTC)
    return RetainedCRLEntry(
        ca_id=ca_id,
        org_id=org_id,
        certificate_id=0,
        serial_number=serial,
        revoked_at=now,
        reason="keyCompromise",
        not_after=now + timedelta(days=30),
        deleted_at=now,
    )


def in_thread(work: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def group(sessions: sessionmaker[Session], name: str, lifetimes: tuple[int, ...]) -> list[int]:
    """An organization and the ids of an issuer group of rows living that many days each."""
    key = ec.generate_private_key(ec.SECP256R1())
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add(name).id
        service = cas(session, org, sessions)
        rows = [
            service.store_imported(self_signed_ca(name, timedelta(days=d), key=key)[0], key, None)
            for d in lifetimes
        ]
        return [org, *(row.id for row in rows)]


def test_two_deletions_in_one_group_leave_the_entries_to_the_row_that_stays(
    engine: Engine,
) -> None:
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    org, first, second, stays = group(sessions, "Race Root", (100, 200, 300))
    with sessions.begin() as session:
        session.add_all([kept(first, org, "A1"), kept(second, org, "B1")])

    errors: list[BaseException] = []
    deleted_first, go = threading.Event(), threading.Event()

    def delete_first() -> None:
        with sessions.begin() as session:
            cas(session, org, sessions).delete(first)
            deleted_first.set()
            assert go.wait(30)  # holds its transaction open while the second starts

    def delete_second() -> None:
        with sessions.begin() as session:
            cas(session, org, sessions).delete(second)

    one = in_thread(delete_first, errors)
    assert deleted_first.wait(30), errors
    two = in_thread(delete_second, errors)
    two.join(1.0)
    waited = two.is_alive()  # it waits for the first deletion to end
    go.set()
    one.join(30)
    two.join(30)
    assert not errors, errors
    assert waited
    with sessions() as session:
        query = select(RetainedCRLEntry.serial_number, RetainedCRLEntry.ca_id)
        found: dict[str, Any] = {serial: ca_id for serial, ca_id in session.execute(query)}
    assert found == {"A1": stays, "B1": stays}


def test_a_row_deleted_during_a_publication_of_its_group(engine: Engine) -> None:
    """The CRLs are stored under the rows that are left and the lease goes back, rather than
    the whole publication failing on the deleted row (and its lease held for two minutes)."""
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    org, holder, leaving = group(sessions, "Publishing Root", (100, 200))
    policy = CRLPolicy(timedelta(hours=24), timedelta(hours=4), timedelta(0))
    publication = PublicationBase("http://127.0.0.1:8080")
    publisher = CRLPublisher(sessions, KEYS, publication, policy, utc_now)
    build = publisher._build

    def build_then_delete(*args: Any) -> Any:
        built = build(*args)
        with sessions.begin() as session:  # while the CRLs are being signed
            cas(session, org, sessions).delete(leaving)
        return built

    publisher._build = build_then_delete  # type: ignore[method-assign]
    published = publisher.publish(holder, "schedule")
    assert published is not None and published.full.ca_id == holder
    with sessions() as session:
        stored = set(session.scalars(select(PublishedCRL.ca_id)))
        state = session.get(CRLState, holder)
    assert stored == {holder}
    assert state is not None and state.lease_owner is None and state.last_error is None


def test_a_deletion_during_a_publication_leaves_the_group_due(engine: Engine) -> None:
    """The deletion made the group's CRLs due (what it handed over may be missing from the
    CRLs being built): the publication that ends after it must not push that to the next
    scheduled run, hours away."""
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    org, holder, leaving = group(sessions, "Due Root", (100, 200))
    policy = CRLPolicy(timedelta(hours=24), timedelta(hours=4), timedelta(0))
    publisher = CRLPublisher(
        sessions, KEYS, PublicationBase("http://127.0.0.1:8080"), policy, utc_now
    )
    build = publisher._build

    def build_then_delete(*args: Any) -> Any:
        built = build(*args)  # its snapshot taken
        with sessions.begin() as session:
            cas(session, org, sessions).delete(leaving)
        return built

    publisher._build = build_then_delete  # type: ignore[method-assign]
    assert publisher.publish(holder, "schedule") is not None
    with sessions() as session:
        state = session.get(CRLState, holder)
        assert state is not None and state.due_at is not None
        assert state.due_at.replace(tzinfo=UTC) <= datetime.now(UTC)
