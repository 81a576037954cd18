"""Engine and sessions. SQLite runs in WAL mode with foreign keys on; PostgreSQL via URL."""

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from tessera.storage import sqlite_writes
from tessera.storage.repositories.cas import let_go_of_cas

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, background_checkpoints: bool = False) -> Engine:
    """`background_checkpoints` (SQLite): commits never checkpoint the WAL; the caller runs
    `sqlite_writes.checkpoint` on a schedule instead (a server process does, every second)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        if engine.url.database not in (None, "", ":memory:"):
            sqlite_writes.install(engine, engine.url.database, background_checkpoints)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Recycling instead of a pre-ping: no extra round trip on every checkout.
    return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # autocommit: reads take no lock or snapshot
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # SQLite's own lower() folds A-Z only, while searches lower-case the term with Python's:
    # a name with "Ä" was not found even by its own spelling. PostgreSQL's folds every letter.
    # Replaced on each connection, so queries, the search copy's triggers and migrations agree.
    dbapi_connection.create_function("lower", 1, unicode_lower, deterministic=True)


def unicode_lower(value: object) -> object:
    """SQL lower() on SQLite: Python's Unicode lower-casing; anything else as it is."""
    return value.lower() if isinstance(value, str) else value


def session_factory(engine: Engine) -> sessionmaker[Session]:
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    for end in ("after_commit", "after_rollback"):
        event.listen(sessions, end, let_go_of_cas)
    return sessions


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (both SQLite and PostgreSQL)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
