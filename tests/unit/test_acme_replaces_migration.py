"""Migration 0016 builds the one-live-replacement index over orders the old race left
doubled, on both backends: the oldest live order keeps its `replaces`, and from then on the
database refuses a second live order replacing the same certificate."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from tessera.storage.db import session_factory
from tessera.storage.models_acme import AcmeAccount, AcmeOrder
from tessera.storage.repositories import Repositories
from tests.support import alembic


def _order(org: int, account: int, status: str, replaces: str | None) -> AcmeOrder:
    return AcmeOrder(
        org_id=org,
        account_id=account,
        status=status,
        expires_at=datetime.now(UTC) + timedelta(days=7),
        identifiers=[{"type": "dns", "value": "renewed.example"}],
        replaces=replaces,
    )


def test_doubled_replacements_before_0016_keep_the_oldest(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0015")
    sessions = session_factory(bare_engine)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("migrated").id
        account = AcmeAccount(org_id=org, thumbprint="t" * 43, jwk={"kty": "EC"})
        session.add(account)
        session.flush()
        statuses = [("valid", "X"), ("pending", "X"), ("invalid", "X"), ("ready", "Y")]
        orders = [_order(org, account.id, s, r) for s, r in statuses]
        session.add_all(orders)
        session.flush()
        ids = [o.id for o in orders]
    alembic(bare_engine, "upgrade", "head")
    with sessions.begin() as session:
        rows = session.execute(select(AcmeOrder.id, AcmeOrder.replaces).order_by(AcmeOrder.id))
        assert list(rows) == [(ids[0], "X"), (ids[1], None), (ids[2], "X"), (ids[3], "Y")]
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(_order(org, account.id, "pending", "Y"))
    with sessions.begin() as session:  # an invalid one may name it again
        session.add(_order(org, account.id, "invalid", "Y"))
    alembic(bare_engine, "downgrade", "0015")  # the index goes, the orders stay
    with sessions.begin() as session:
        session.add(_order(org, account.id, "pending", "Y"))
