"""Serial numbers are claimed in `issued_serials` before signing, so no two certificates
ever share one (RFC 5280 section 4.1.2.2).

Claiming one per issuance would make every issuance start with a write, and on SQLite the
write lock would then be held through signing. Instead each process claims a block of random
serials in a short transaction of its own and hands them out; an issuance only writes its
certificate. A claimed serial that is never used (the process stopped) is simply skipped:
serials only have to be unique, not dense."""

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from tessera.core.errors import PolicyViolation
from tessera.core.inspect import serial_hex
from tessera.storage.models import IssuedSerial

SERIAL_ATTEMPTS = 5


_RESERVE = {
    postgres: (postgresql.insert if postgres else sqlite.insert)(IssuedSerial)
    .on_conflict_do_nothing(index_elements=["serial_number"])
    .returning(IssuedSerial.serial_number)
    for postgres in (False, True)
}


class SerialRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def reserve(self, serials: list[int]) -> list[int]:
        """Claim the serials that are still free, in one statement: a clash inserts nothing
        for that serial (both SQLite 3.35+ and PostgreSQL speak ON CONFLICT)."""
        if not serials:
            return []
        connection = self._session.connection()
        moment = datetime.now(UTC)
        by_hex = {serial_hex(s): s for s in serials}
        rows = [{"serial_number": h, "reserved_at": moment} for h in by_hex]
        # One statement, parameters apart: SQLAlchemy sends them as multi-row VALUES batches
        # ("insertmanyvalues") and reuses the compiled form instead of compiling 256 rows.
        claimed = connection.execute(_RESERVE[connection.dialect.name == "postgresql"], rows)
        return [by_hex[h] for h in claimed.scalars()]


class SerialPool:
    """Serials this process has already claimed, refilled in the background.

    `take` never waits for the refill: a caller may already hold SQLite's write lock (a bulk
    renewal, an ACME finalize), and the refill's own transaction would wait for that lock.
    When the pool is empty the caller claims one serial in its own transaction instead."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        generate: Callable[[], int],
        size: int = 256,
        low: int = 64,
    ) -> None:
        self._sessions, self._generate = sessions, generate
        self._size, self._low = size, low
        self._free: list[int] = []
        self._lock = threading.Lock()
        self.wanted: Callable[[], None] = lambda: None  # set to kick the refill job

    def take(self, repo: SerialRepository) -> int:
        with self._lock:
            serial = self._free.pop() if self._free else None
            running_low = len(self._free) < self._low
        if running_low:
            self.wanted()
        return serial if serial is not None else claim_one(repo, self._generate)

    def refill(self) -> None:
        with self._lock:
            missing = self._size - len(self._free)
        if missing < self._size - self._low:
            return
        with self._sessions() as session, session.begin():
            claimed = SerialRepository(session).reserve([self._generate() for _ in range(missing)])
        with self._lock:
            self._free.extend(claimed)


def claim_one(repo: SerialRepository, generate: Callable[[], int]) -> int:
    for _ in range(SERIAL_ATTEMPTS):
        claimed = repo.reserve([generate()])
        if claimed:
            return claimed[0]
    raise PolicyViolation("could not reserve a unique serial number")
