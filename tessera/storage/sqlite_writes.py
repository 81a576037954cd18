"""Writers on one SQLite file, across threads and worker processes, queue on a file lock.

Reads run in autocommit and take no lock. The first write of a unit of work takes an
exclusive `flock` on `<db>.writelock`, then `BEGIN IMMEDIATE`; the lock is released when the
transaction ends. The kernel wakes the next writer the moment the lock is free, where
SQLite's own busy handler would poll with sleeps of up to 100 ms (seconds of tail latency
under load). A deferred transaction is not an option: it fails at once, instead of waiting,
when its read snapshot went stale before its first write."""

import fcntl
import os
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "SAVEPOINT", "CREATE", "DROP", "ALTER")
_LOCK_FD = "tessera_write_lock_fd"
_HELD = "tessera_write_lock_held"


def install(engine: Engine, database_path: str, background_checkpoints: bool = False) -> None:
    lock_path = f"{database_path}.writelock"

    if background_checkpoints:
        # SQLite checkpoints the WAL inside the COMMIT that takes it past 1,000 pages, so with
        # the write lock held (copying and syncing megabytes); `checkpoint` does it instead.
        @event.listens_for(engine, "connect")
        def _no_checkpoint_on_commit(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    @event.listens_for(engine, "connect")
    def _open_lock(dbapi_connection: Any, record: Any) -> None:
        record.info[_LOCK_FD] = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    @event.listens_for(engine, "close")
    def _close_lock(dbapi_connection: Any, record: Any) -> None:
        _release(record.info)
        fd = record.info.pop(_LOCK_FD, None)
        if fd is not None:
            os.close(fd)

    @event.listens_for(engine, "before_cursor_execute")
    def _begin_on_first_write(
        conn: Any, cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        raw = conn.connection.dbapi_connection
        if raw.in_transaction or not statement.lstrip()[:10].upper().startswith(_WRITES):
            return
        info = conn.connection.info
        fcntl.flock(info[_LOCK_FD], fcntl.LOCK_EX)
        info[_HELD] = True
        cursor.execute("BEGIN IMMEDIATE")

    # Released once SQLite's own transaction has ended. The engine's "commit" and "rollback"
    # events fire before the DBAPI call: released there, the next writer could find SQLite's
    # lock still held and wait in its busy handler, which sleeps 1, 2, 5... ms between tries.
    for name in ("do_commit", "do_rollback"):
        setattr(engine.dialect, name, _then_release(getattr(engine.dialect, name)))

    @event.listens_for(engine, "checkin")
    def _released_on_return(dbapi_connection: Any, record: Any) -> None:
        _release(record.info)


def _then_release(end: Callable[[Any], None]) -> Callable[[Any], None]:
    def end_then_release(connection: Any) -> None:
        try:
            end(connection)
        finally:
            try:
                info = connection.info  # the pool's proxy: its info is the record's
            except (AttributeError, NotImplementedError):
                info = None  # the dialect's first-connect check, which took no lock
            if info is not None:
                _release(info)

    return end_then_release


def _release(info: dict[str, Any]) -> None:
    if info.pop(_HELD, False):
        fcntl.flock(info[_LOCK_FD], fcntl.LOCK_UN)


def checkpoint(engine: Engine) -> None:
    """Copy what the WAL holds into the database file without waiting for, or holding up,
    readers and writers (PASSIVE; SQLite lets one checkpoint run at a time and skips the
    others). With `background_checkpoints`, a scheduled call of this is the only checkpoint."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def nothing_to_commit(session: Session) -> bool:
    """Whether committing the session would change nothing in the database: on SQLite, whose
    connections run in autocommit until the first write's `BEGIN IMMEDIATE`, a unit of work
    that only read has no transaction open (any statement run outside one was committed by
    SQLite as it ran). Committing it anyway costs SQLAlchemy's whole commit. On PostgreSQL
    this cannot be told from the session (a Core DML statement leaves no trace in it), so
    the answer there is always no."""
    if not session.in_transaction():
        return True
    connection = session.connection()
    if connection.dialect.name != "sqlite" or connection.in_nested_transaction():
        return False
    return not connection.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
