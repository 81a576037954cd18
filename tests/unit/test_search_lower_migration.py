"""Migration 0025 lower-cases again, on SQLite, the search copy's texts written when SQLite's
lower() folded A-Z only: a certificate named with other capitals is then found by any
spelling of its name (on PostgreSQL, whose lower() folds them all, it changes nothing)."""

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Engine, select, text

from tessera.domains.issuance import certificate_row
from tessera.storage.db import session_factory
from tessera.storage.models_search import CertificateSearchRow
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.certificate_search import CertificateSearchRepository
from tests.e2e.helpers import self_signed_ca
from tests.support import alembic

NAME = "Ärztekammer Köln"


def test_texts_lower_cased_by_ascii_only_are_lower_cased_again(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0024")
    cert, _ = self_signed_ca(NAME, timedelta(days=30))
    sessions = session_factory(bare_engine)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("searched").id
        row = certificate_row(cert, cast(Any, None), None)
        row.org_id = org
        session.add(row)
        session.flush()
        cert_id = row.id
        if bare_engine.dialect.name == "sqlite":  # what its own lower() wrote before
            stale = {"text": "Ärztekammer köln\n", "id": cert_id}
            update = "UPDATE certificate_search SET text = :text WHERE id = :id"
            session.execute(text(update), stale)
    alembic(bare_engine, "upgrade", "head")
    with sessions.begin() as session:
        stored = session.scalar(
            select(CertificateSearchRow.text).where(CertificateSearchRow.id == cert_id)
        )
        assert stored == "ärztekammer köln\n"
        search = CertificateSearchRepository(session, org)
        for term in (NAME, NAME.lower(), NAME.upper()):
            assert session.scalars(search.ids(term)).all() == [cert_id], term
