"""Migration 0026 makes the trust store's serials unbounded text. On SQLite that rebuilds the
table, which must keep migration 0015's AUTOINCREMENT key and the largest id ever given (the
copy alone would seed the sequence with the largest id left, and give a deleted entry's id
again); its downgrade cuts longer serials back to 64 characters."""

from datetime import timedelta

from sqlalchemy import Engine, text

from tessera.domains.truststore.service import TrustDetails, trusted_row
from tessera.storage.db import session_factory
from tessera.storage.models import TrustedCertificate
from tessera.storage.repositories import Repositories
from tests.e2e.helpers import self_signed_ca
from tests.support import alembic

LONG_SERIAL = "0x7" + "C" * 79  # 40 octets


def _add(engine: Engine, org_id: int | None, names: list[str]) -> tuple[int, list[int]]:
    with session_factory(engine).begin() as session:
        org = org_id or Repositories(session, 0).organizations.add("trusting").id
        certs = [self_signed_ca(name, timedelta(days=9))[0] for name in names]
        rows = [trusted_row(cert, TrustDetails(), "manual") for cert in certs]
        for row in rows:
            row.org_id = org
            session.add(row)
        session.flush()
        return org, [row.id for row in rows]


def test_serials_become_text_and_no_id_is_given_again(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0025")
    org, ids = _add(bare_engine, None, ["Trusted A", "Trusted B", "Trusted C"])
    with bare_engine.begin() as connection:  # the last entry goes: its id is spent
        connection.execute(text("DELETE FROM trusted_certificates WHERE id = :id"), {"id": ids[-1]})
    alembic(bare_engine, "upgrade", "head")
    _, [new_id] = _add(bare_engine, org, ["Trusted D"])
    assert new_id > ids[-1]
    with bare_engine.begin() as connection:
        set_long = "UPDATE trusted_certificates SET serial_number = :s WHERE id = :id"
        connection.execute(text(set_long), {"s": LONG_SERIAL, "id": new_id})
    with session_factory(bare_engine)() as session:
        stored = session.get(TrustedCertificate, new_id)
        assert stored is not None and stored.serial_number == LONG_SERIAL
    if bare_engine.dialect.name == "sqlite":
        with bare_engine.connect() as connection:
            sql = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'trusted_certificates'")
            ).scalar_one()
        assert "AUTOINCREMENT" in sql, sql
    alembic(bare_engine, "downgrade", "0025")
    with bare_engine.connect() as connection:
        serial = connection.execute(
            text("SELECT serial_number FROM trusted_certificates WHERE id = :id"), {"id": new_id}
        ).scalar_one()
    assert serial == LONG_SERIAL[:64]
