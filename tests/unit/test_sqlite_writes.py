"""Writers on one SQLite file (storage/sqlite_writes.py): they queue on a file lock that is let
go only once SQLite's own transaction has ended, so the next writer never meets SQLite's lock
(and its busy handler's sleeps) behind it; and a server's engine leaves WAL checkpoints to a
job instead of the commit that crosses the threshold."""

import fcntl
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tessera.storage.db import make_engine
from tessera.storage.sqlite_writes import checkpoint


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


def _write_megabytes(engine: Engine, count: int) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS blobs (b BLOB)"))
    for _ in range(count):  # one transaction each, as requests write
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO blobs VALUES (randomblob(1000000))"))


@pytest.mark.parametrize("background", [False, True])
def test_checkpoints_leave_the_commit_path_when_asked(tmp_path: Path, background: bool) -> None:
    """With background checkpoints a commit never copies the WAL into the database file
    (whatever its size); `checkpoint` does. Without, SQLite's own checkpoint on commit does."""
    path = tmp_path / "tessera.db"
    engine = make_engine(f"sqlite:///{path}", background_checkpoints=background)
    _write_megabytes(engine, 6)  # 1,500 pages: past the 1,000 at which a commit checkpoints
    copied_on_commit = path.stat().st_size > 4_000_000
    checkpoint(engine)
    copied_in_the_end = path.stat().st_size > 6_000_000
    engine.dispose()
    assert (copied_on_commit, copied_in_the_end) == (not background, True)
