"""ACME nonces of a SQLite deployment, in a small SQLite file of their own beside the database
(`<database>.acme-nonces`).

Every signed ACME request spends a nonce, most of them in requests that otherwise only read.
In the database itself that DELETE takes SQLite's single write lock, which every issuance,
order and validation of every worker process queues on; here it takes the lock of a file
that holds nothing else, for one statement. The file is shared by the worker processes of
one host, which is all a SQLite deployment can have.

Nonces are volatile by nature: the file is created when missing, written without syncing,
and losing it (a crash, a deleted file) only makes clients retry with a fresh nonce
(badNonce), as RFC 8555 section 6.5 expects of them. So it is a cache, not part of the
schema, and is not migrated."""

import sqlite3
import threading
from collections.abc import Sequence

_SCHEMA = "CREATE TABLE IF NOT EXISTS nonces (value TEXT PRIMARY KEY, expires_at REAL NOT NULL)"


class NonceFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._connection().execute(_SCHEMA)

    def add(self, values: Sequence[str], expires_at: float) -> None:
        connection = self._connection()
        with connection:  # commits, or rolls back on an error
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO nonces (value, expires_at) VALUES (?, ?)",
                [(value, expires_at) for value in values],
            )

    def consume(self, value: str, now: float) -> bool:
        """Single use across processes: exactly one DELETE of a row reports it."""
        cursor = self._connection().execute(
            "DELETE FROM nonces WHERE value = ? AND expires_at > ?", (value, now)
        )
        return cursor.rowcount == 1

    def purge(self, now: float) -> int:
        cursor = self._connection().execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
        return cursor.rowcount

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections are not to be shared)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            self._local.connection = connection
        return connection
