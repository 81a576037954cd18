"""The ACME validation job on both backends: challenges handed over by this process's
requests, challenges whose lease ran out (their process died), and the batch they are
recorded in (challenge, authorization, order and one audit row each, exactly once)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from tessera.domains.acme.validation import ValidationConfig
from tessera.domains.acme.worker import AcmeWorker
from tessera.storage.db import session_factory
from tessera.storage.models import AuditLog
from tessera.storage.models_acme import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.audit import KEY_INFO

VALIDATED = "acme.challenge.validate"


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    factory = session_factory(engine)
    factory.configure(info={KEY_INFO: b"k" * 32})
    return factory


def worker(sessions: sessionmaker[Session]) -> AcmeWorker:
    config = ValidationConfig.parse("", 80, 443, 1.0)
    return AcmeWorker(sessions, lambda: datetime.now(UTC), config, "tessera", always_valid=True)


def order_with_challenges(
    sessions: sessionmaker[Session], leases: list[timedelta | None]
) -> tuple[int, list[int]]:
    """An order with one authorization per lease; each has a dns-01 challenge, `processing`
    with next_attempt_at = now + lease, or `pending` for None."""
    now = datetime.now(UTC)
    with sessions() as session:
        org_id = Repositories(session, 0).organizations.add(f"acme-{uuid.uuid4().hex[:8]}").id
        account = AcmeAccount(org_id=org_id, thumbprint=uuid.uuid4().hex, jwk={"kty": "EC"})
        session.add(account)
        session.flush()
        names = [f"host{i}.example" for i in range(len(leases))]
        order = AcmeOrder(
            org_id=org_id,
            account_id=account.id,
            expires_at=now + timedelta(days=7),
            identifiers=[{"type": "dns", "value": n} for n in names],
        )
        session.add(order)
        session.flush()
        challenge_ids = []
        for name, lease in zip(names, leases, strict=True):
            authz = AcmeAuthorization(
                org_id=org_id,
                order_id=order.id,
                account_id=account.id,
                identifier_type="dns",
                identifier_value=name,
                expires_at=now + timedelta(days=7),
            )
            session.add(authz)
            session.flush()
            challenge = AcmeChallenge(
                authz_id=authz.id,
                type="dns-01",
                token=uuid.uuid4().hex,
                status="pending" if lease is None else "processing",
                next_attempt_at=None if lease is None else now + lease,
            )
            session.add(challenge)
            session.flush()
            challenge_ids.append(challenge.id)
        session.commit()
        return order.id, challenge_ids


def state(sessions: sessionmaker[Session], order_id: int) -> tuple[str, list[str], list[int]]:
    """The order's status, its challenges' statuses, and the challenges audited as validated."""
    with sessions() as session:
        order = session.get(AcmeOrder, order_id)
        assert order is not None
        challenges = session.scalars(
            select(AcmeChallenge)
            .join(AcmeAuthorization, AcmeAuthorization.id == AcmeChallenge.authz_id)
            .where(AcmeAuthorization.order_id == order_id)
            .order_by(AcmeChallenge.id)
        ).all()
        ids = [str(c.id) for c in challenges]
        audited = session.scalars(
            select(AuditLog.resource_id).where(
                AuditLog.action == VALIDATED,
                AuditLog.org_id == order.org_id,
                AuditLog.resource_id.in_(ids),
            )
        ).all()
        return order.status, [c.status for c in challenges], sorted(int(i) for i in audited)


def hand_over(sessions: sessionmaker[Session], job: AcmeWorker, challenge_id: int) -> None:
    """As the challenge's request does: the attempt built from the rows it loaded."""
    with sessions() as session:
        challenge = session.get(AcmeChallenge, challenge_id)
        assert challenge is not None
        authz = session.get(AcmeAuthorization, challenge.authz_id)
        assert authz is not None
        repos = Repositories(session, authz.org_id)
        account = repos.acme.account(authz.account_id)
        assert account is not None
        job.hand_over(job.attempt_for(challenge, authz, account, repos.acme.settings()))


def test_handed_over_challenges_are_recorded_once_in_one_batch(
    sessions: sessionmaker[Session],
) -> None:
    order_id, (first, second, waiting) = order_with_challenges(
        sessions, [timedelta(seconds=60), timedelta(seconds=60), None]
    )
    job = worker(sessions)
    for challenge_id in (first, second, first, waiting):  # a repeat, and one not answered
        hand_over(sessions, job, challenge_id)
    job.validate_due()
    assert state(sessions, order_id) == ("pending", ["valid", "valid", "pending"], [first, second])
    hand_over(sessions, job, first)  # already recorded: nothing happens again
    job.validate_due()
    assert state(sessions, order_id) == ("pending", ["valid", "valid", "pending"], [first, second])


def test_a_lease_that_ran_out_is_claimed_by_the_job(sessions: sessionmaker[Session]) -> None:
    """Nobody handed these over (the process that claimed them died): the one whose lease
    ran out is validated; the one still leased to another process is left to it."""
    order_id, (orphaned, leased) = order_with_challenges(
        sessions, [timedelta(seconds=-1), timedelta(seconds=60)]
    )
    job = worker(sessions)
    job.validate_due()
    assert state(sessions, order_id) == ("pending", ["valid", "processing"], [orphaned])
    hand_over(sessions, job, leased)  # its own process gets to it: the order becomes ready
    job.validate_due()
    assert state(sessions, order_id) == ("ready", ["valid", "valid"], [orphaned, leased])


def test_cleanup_expires_what_outlived_its_expiry(sessions: sessionmaker[Session]) -> None:
    """RFC 8555 7.1.6: a pending or ready order past its expiry is invalid, and so is one
    still waiting for an approval (no approval issues it any more); a pending or valid
    authorization past its expiry is expired. A valid order keeps its status."""
    order_id, _ = order_with_challenges(sessions, [None, None, None])
    done_id, _ = order_with_challenges(sessions, [None])
    waiting_id, _ = order_with_challenges(sessions, [None])
    past = datetime.now(UTC) - timedelta(minutes=1)
    with sessions() as session:
        order, done = session.get(AcmeOrder, order_id), session.get(AcmeOrder, done_id)
        waiting = session.get(AcmeOrder, waiting_id)
        assert order is not None and done is not None and waiting is not None
        order.status, order.expires_at = "ready", past
        done.status = "valid"
        waiting.status, waiting.awaiting_approval, waiting.expires_at = "processing", True, past
        authzs = session.scalars(
            select(AcmeAuthorization)
            .where(AcmeAuthorization.order_id.in_((order_id, done_id)))
            .order_by(AcmeAuthorization.id)
        ).all()
        for authz, status in zip(authzs, ("valid", "pending", "invalid", "valid"), strict=True):
            authz.status, authz.expires_at = status, past
        session.commit()
    worker(sessions).cleanup()
    with sessions() as session:
        assert session.get(AcmeOrder, order_id).status == "invalid"  # type: ignore[union-attr]
        assert session.get(AcmeOrder, done_id).status == "valid"  # type: ignore[union-attr]
        waited = session.get(AcmeOrder, waiting_id)
        assert waited is not None and (waited.status, waited.awaiting_approval) == (
            "invalid",
            False,
        )
        statuses = session.scalars(
            select(AcmeAuthorization.status)
            .where(AcmeAuthorization.order_id.in_((order_id, done_id)))
            .order_by(AcmeAuthorization.id)
        ).all()
        assert list(statuses) == ["expired", "expired", "invalid", "expired"]


def test_an_order_made_invalid_meanwhile_is_not_claimed(sessions: sessionmaker[Session]) -> None:
    """AcmeRepository.claim_order: a finalize or an approval moves an order on only from the
    statuses it expects. An order invalidated by another request (its account deactivated,
    an authorization lost) after this one read it stays invalid; the same claim on an order
    still ready wins once."""
    from tessera.domains.acme.orders import FINALIZABLE

    order_id, _ = order_with_challenges(sessions, [None])
    with sessions() as session:
        order = session.get(AcmeOrder, order_id)
        assert order is not None
        order.status = "ready"
        session.commit()
    with sessions() as reader, sessions() as other:
        seen = reader.get(AcmeOrder, order_id)  # read as ready...
        assert seen is not None and seen.status == "ready"
        invalidated = other.get(AcmeOrder, order_id)
        assert invalidated is not None
        invalidated.status = "invalid"  # ...then made invalid by another request
        other.commit()
        repo = Repositories(reader, seen.org_id).acme
        assert not repo.claim_order(seen, FINALIZABLE, status="valid")
        reader.rollback()
    with sessions() as session:
        stored = session.get(AcmeOrder, order_id)
        assert stored is not None and stored.status == "invalid"
        stored.status = "ready"
        session.commit()
    with sessions() as session:
        order = session.get(AcmeOrder, order_id)
        assert order is not None
        repo = Repositories(session, order.org_id).acme
        assert repo.claim_order(order, FINALIZABLE, status="valid")
        assert not repo.claim_order(order, FINALIZABLE, status="valid")  # valid now
        session.commit()


def test_an_outcome_for_an_attempt_claimed_again_since_is_dropped(
    sessions: sessionmaker[Session],
) -> None:
    """Attempt 1 outlived its lease (a slow validation) and another process claimed attempt
    2 meanwhile: attempt 1's outcome, arriving late, changes nothing (not the status, not
    next_attempt_at, no audit row); attempt 2's own outcome is recorded."""
    order_id, (challenge_id,) = order_with_challenges(sessions, [timedelta(seconds=60)])
    with sessions() as session:
        challenge = session.get(AcmeChallenge, challenge_id)
        assert challenge is not None
        challenge.attempts = 1  # the request's claim
        session.commit()
    job = worker(sessions)
    hand_over(sessions, job, challenge_id)  # attempt 1, built before the claim below
    later = datetime.now(UTC) + timedelta(seconds=60)
    with sessions() as session:
        challenge = session.get(AcmeChallenge, challenge_id)
        assert challenge is not None
        challenge.attempts, challenge.next_attempt_at = 2, later  # another process's claim
        session.commit()
    job.validate_due()
    assert state(sessions, order_id) == ("pending", ["processing"], [])
    with sessions() as session:
        challenge = session.get(AcmeChallenge, challenge_id)
        assert challenge is not None
        assert challenge.next_attempt_at is not None
        assert challenge.next_attempt_at.replace(tzinfo=UTC) == later
        assert challenge.error is None
    hand_over(sessions, job, challenge_id)  # attempt 2's own outcome
    job.validate_due()
    assert state(sessions, order_id) == ("ready", ["valid"], [challenge_id])
