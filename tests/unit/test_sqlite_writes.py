"""Writers on one SQLite file queue on a file lock (storage/sqlite_writes.py): the lock is let
go only once SQLite's own transaction has ended, so the next writer never meets SQLite's lock
(and its busy handler's sleeps) behind it."""

import fcntl
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tessera.storage.db import make_engine


def test_the_file_lock_outlasts_the_sqlite_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tessera.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    seen: list[str] = []
    real_flock = fcntl.flock

    def flock(fd: Any, operation: int) -> None:
        if operation == fcntl.LOCK_UN:  # another writer would be let in now: can it write?
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                seen.append("free")
            except sqlite3.OperationalError:
                seen.append("still locked")
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    with engine.begin() as connection:  # committed
        connection.execute(text("INSERT INTO t VALUES (1)"))
    with Session(engine) as session:  # rolled back
        session.execute(text("INSERT INTO t VALUES (2)"))
        session.rollback()
    with Session(engine) as session:  # committed through the ORM session
        session.execute(text("INSERT INTO t VALUES (3)"))
        session.commit()
    monkeypatch.undo()
    probe.close()
    engine.dispose()
    assert seen == ["free", "free", "free"]
