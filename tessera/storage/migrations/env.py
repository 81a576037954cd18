"""Alembic environment: runs on the connection Tessera hands it, or on DATABASE_URL."""

import os

from alembic import context
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from sqlalchemy import Connection

import tessera.storage.models_accounts
import tessera.storage.models_acme
import tessera.storage.models_audit
import tessera.storage.models_crl
import tessera.storage.models_ocsp
import tessera.storage.models_scep
import tessera.storage.models_search
import tessera.storage.models_security
import tessera.storage.models_tally  # noqa: F401 - every model module (see below)
from tessera.storage.db import make_engine
from tessera.storage.models import Base

# Every model module is imported above, so that autogenerate compares the whole schema and
# proposes no DROP for a table it did not see.
target_metadata = Base.metadata
# Made by hand in migrations, unknown to the models, so autogenerate must not propose dropping
# them: the search structures of 0003 and 0013 (docs/inventory-performance.md) and the CRL's
# partial covering index of 0004, whose columns differ by dialect.
HAND_MADE_PREFIXES = ("certificate_search_fts", "certificates_fts")
HAND_MADE_INDEXES = {"ix_certificate_search_trgm", "ix_certificates_crl"}


def include_name(name: str | None, type_: NameFilterType, _parents: NameFilterParentNames) -> bool:
    if type_ == "table" and name is not None and name.startswith(HAND_MADE_PREFIXES):
        return False
    return not (type_ == "index" and name in HAND_MADE_INDEXES)


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    engine = make_engine(os.environ.get("DATABASE_URL", "sqlite:///data/tessera.db"))
    with engine.begin() as conn:
        run(conn)
