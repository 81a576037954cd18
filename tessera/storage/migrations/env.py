"""Alembic environment: runs on the connection Tessera hands it, or on DATABASE_URL."""

import os

from alembic import context
from sqlalchemy import Connection

from tessera.storage.db import make_engine
from tessera.storage.models import Base

target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
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
